//! Which database files to look at: patterns expanded to existing files, and each file's identity
//! (device and inode) together with its `-journal`, `-wal` and `-shm` siblings.
//!
//! Identity, not path, is what `/proc/locks` speaks, and a path can reach a file through a symlink or
//! a bind mount: the device is decoded from `st_dev` with libc's `major()`/`minor()` so it compares
//! with the kernel's `maj:min` exactly. A pattern that matches nothing is an error of its own, so a
//! typo in a target never reads as "no locks held".

use crate::domain::sqlite::{FileId, FileRole, TargetFiles};
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One expanded pattern: the files it matched, or why it gave none.
#[derive(Debug)]
pub enum Expanded {
    Files(Vec<PathBuf>),
    Failed { pattern: String, error: TargetError },
}

/// Why a pattern gave no database file.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid pattern: {0}")]
    Pattern(#[from] glob::PatternError),
    #[error("no file matches this pattern")]
    NoMatch,
}

/// The identity of a file as `/proc/locks` prints it.
pub fn identify(metadata: &fs::Metadata) -> FileId {
    let dev = metadata.dev() as libc::dev_t;
    FileId {
        major: libc::major(dev),
        minor: libc::minor(dev),
        inode: metadata.ino(),
    }
}

/// The path of one of a database's files.
pub fn build_sibling_path(db: &Path, role: FileRole) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(role.suffix());
    PathBuf::from(s)
}

fn is_sibling_of_a_match(path: &Path, matched: &BTreeSet<PathBuf>) -> bool {
    let Some(s) = path.to_str() else { return false };
    [FileRole::Journal, FileRole::Wal, FileRole::Shm]
        .iter()
        .filter_map(|r| s.strip_suffix(r.suffix()))
        .any(|base| matched.contains(Path::new(base)))
}

/// Expands each pattern (shell glob syntax; a plain path is a pattern matching itself) to the regular
/// files it matches. `-journal`/`-wal`/`-shm` files whose database also matched are left out: they
/// are read as part of it (a pattern like `gw*.db*` would otherwise list each database four times).
/// A file matched by two patterns is listed once, under the first.
pub fn expand(patterns: &[String]) -> Vec<Expanded> {
    let mut listed: BTreeSet<PathBuf> = BTreeSet::new();
    patterns
        .iter()
        .map(|pattern| {
            // An existing file is itself, even when its name has glob characters (`[`, `*`, `?`).
            let literal = Path::new(pattern);
            if literal.is_file() {
                let p = literal.to_path_buf();
                return Expanded::Files(if listed.insert(p.clone()) {
                    vec![p]
                } else {
                    Vec::new()
                });
            }
            let paths = match glob::glob(pattern) {
                Ok(paths) => paths,
                Err(e) => {
                    return Expanded::Failed {
                        pattern: pattern.clone(),
                        error: e.into(),
                    }
                }
            };
            // Unreadable directories on the way are skipped by design of glob; a pattern that only
            // reached such directories still ends as NoMatch, which is stated.
            let matched: BTreeSet<PathBuf> = paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if matched.is_empty() {
                return Expanded::Failed {
                    pattern: pattern.clone(),
                    error: TargetError::NoMatch,
                };
            }
            let files = matched
                .iter()
                .filter(|p| !is_sibling_of_a_match(p, &matched))
                .filter(|p| listed.insert((*p).clone()))
                .cloned()
                .collect();
            Expanded::Files(files)
        })
        .collect()
}

/// A database's files as found now.
#[derive(Debug, Default)]
pub struct Located {
    pub ids: TargetFiles,
    /// Canonical path and identity of each file that exists, to match `/proc/PID/fd` links.
    pub files: Vec<(PathBuf, FileId)>,
    /// What could not be stat'ed (not "does not exist", which is normal for siblings).
    pub errors: Vec<String>,
    /// Changes whenever a write transaction ends: the database's and the WAL's size and
    /// modification time, and the rollback journal's identity (a new journal per transaction).
    pub write_marker: u64,
}

/// Stats a database and its siblings.
pub fn locate(db: &Path) -> Located {
    let mut located = Located::default();
    for role in [
        FileRole::Db,
        FileRole::Journal,
        FileRole::Wal,
        FileRole::Shm,
    ] {
        let path = build_sibling_path(db, role);
        let id = match fs::metadata(&path) {
            Ok(m) => {
                if matches!(role, FileRole::Db | FileRole::Wal | FileRole::Journal) {
                    use std::hash::{Hash, Hasher};
                    use std::os::unix::fs::MetadataExt;
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    located.write_marker.hash(&mut h);
                    (role as u8, m.size(), m.mtime(), m.mtime_nsec(), m.ino()).hash(&mut h);
                    located.write_marker = h.finish();
                }
                identify(&m)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                located
                    .errors
                    .push(format!("cannot stat {}: {e}", path.display()));
                continue;
            }
        };
        let slot = match role {
            FileRole::Db => &mut located.ids.db,
            FileRole::Journal => &mut located.ids.journal,
            FileRole::Wal => &mut located.ids.wal,
            FileRole::Shm => &mut located.ids.shm,
        };
        *slot = Some(id);
        located
            .files
            .push((fs::canonicalize(&path).unwrap_or(path), id));
    }
    if located.ids.db.is_none() && located.errors.is_empty() {
        located
            .errors
            .push(format!("{} no longer exists", db.display()));
    }
    located
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_patterns_and_reports_the_empty_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in [
            "a_gw0.db",
            "a_gw0.db-wal",
            "a_gw0.db-shm",
            "a_gw1.db",
            "other.txt",
        ] {
            fs::write(dir.path().join(name), b"x").expect("write");
        }
        let d = dir.path().display();
        let out = expand(&[
            format!("{d}/a_gw*.db*"),
            format!("{d}/a_gw0.db"),
            format!("{d}/nothing*.db"),
            format!("{d}/[.db"),
        ]);
        let Expanded::Files(files) = &out[0] else {
            panic!("{out:?}")
        };
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a_gw0.db", "a_gw1.db"]);
        assert!(matches!(&out[1], Expanded::Files(f) if f.is_empty()));
        assert!(matches!(
            &out[2],
            Expanded::Failed {
                error: TargetError::NoMatch,
                ..
            }
        ));
        assert!(matches!(
            &out[3],
            Expanded::Failed {
                error: TargetError::Pattern(_),
                ..
            }
        ));
    }

    #[test]
    fn identifies_files_like_the_kernel() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("x.db");
        fs::write(&db, b"x").expect("write");
        fs::write(build_sibling_path(&db, FileRole::Shm), b"x").expect("write");
        let located = locate(&db);
        assert!(located.ids.db.is_some() && located.ids.shm.is_some());
        assert!(located.ids.wal.is_none() && located.ids.journal.is_none());
        assert_ne!(located.ids.db, located.ids.shm);
        assert_eq!(located.files.len(), 2);
        assert!(located.errors.is_empty());
        let gone = locate(&dir.path().join("gone.db"));
        assert_eq!(gone.errors.len(), 1);
    }
}

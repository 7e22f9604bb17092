//! Reading `/proc`: the lock table, which processes have a file open, and what a process is (its
//! parent, start time, environment and command line).
//!
//! Everything here is best effort by nature: processes exit between two reads (a vanished process is
//! simply not there), and without privileges another user's `/proc/PID/fd` and `environ` cannot be
//! read. Those refusals are counted and handed back, so the report can say what it could not see.

use crate::domain::sqlite::{parse_cmdline, parse_environ, parse_stat, FileId, ProcessInfo};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::targets::identify;

/// Which targets each process has open, from one pass over `/proc/*/fd`.
#[derive(Debug, Default)]
pub struct OpenFiles {
    /// Target index -> pids with one of its files open.
    pub by_target: HashMap<usize, BTreeSet<u32>>,
    /// Processes whose open files could not be listed (permission denied).
    pub unreadable: usize,
}

/// What identifies a target's file when scanning descriptors: its canonical path, or (for a path
/// that reads differently from here, as in another mount namespace) its name and then its identity.
#[derive(Debug, Default)]
pub struct FileIndex {
    pub by_path: HashMap<PathBuf, usize>,
    pub by_name: HashSet<OsString>,
    pub by_id: HashMap<FileId, usize>,
}

impl FileIndex {
    pub fn add(&mut self, target: usize, path: &Path, id: FileId) {
        self.by_path.insert(path.to_path_buf(), target);
        if let Some(name) = path.file_name() {
            self.by_name.insert(name.to_owned());
        }
        self.by_id.insert(id, target);
    }

    fn find_target(&self, fd: &Path, link: &Path) -> Option<usize> {
        if let Some(t) = self.by_path.get(link) {
            return Some(*t);
        }
        // Only files named like a target are stat'ed: a stat per descriptor of every process would
        // cost far more than the readlink.
        let name = link.file_name()?;
        if !self.by_name.contains(name) {
            return None;
        }
        let id = identify(&fs::metadata(fd).ok()?);
        self.by_id.get(&id).copied()
    }
}

fn list_pids(proc_root: &Path) -> io::Result<Vec<u32>> {
    Ok(fs::read_dir(proc_root)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

/// One pass over every process's descriptors.
pub fn scan_open_files(proc_root: &Path, index: &FileIndex) -> io::Result<OpenFiles> {
    let mut out = OpenFiles::default();
    if index.by_path.is_empty() {
        return Ok(out);
    }
    for pid in list_pids(proc_root)? {
        let fd_dir = proc_root.join(pid.to_string()).join("fd");
        let entries = match fs::read_dir(&fd_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                out.unreadable += 1;
                continue;
            }
            // Exited since the listing, or a kernel thread: nothing to see.
            Err(_) => continue,
        };
        for entry in entries.filter_map(Result::ok) {
            let fd = entry.path();
            let Ok(link) = fs::read_link(&fd) else {
                continue;
            };
            if let Some(target) = index.find_target(&fd, &link) {
                out.by_target.entry(target).or_default().insert(pid);
            }
        }
    }
    Ok(out)
}

/// Reads one process; `None` when it is gone. An unreadable environment is `environ: None`.
pub fn read_process(proc_root: &Path, pid: u32) -> Option<ProcessInfo> {
    let dir = proc_root.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let (ppid, start_ticks) = parse_stat(&stat).map_or((None, None), |(p, s)| (Some(p), Some(s)));
    let environ = fs::read(dir.join("environ"))
        .ok()
        .map(|b| parse_environ(&b));
    let cmdline = fs::read(dir.join("cmdline"))
        .map(|b| parse_cmdline(&b))
        .unwrap_or_default();
    Some(ProcessInfo {
        pid,
        ppid,
        start_ticks,
        environ,
        cmdline,
    })
}

/// Reads the given processes and all their ancestors (bounded like attribution's walk).
pub fn read_processes(
    proc_root: &Path,
    pids: impl IntoIterator<Item = u32>,
    max_ancestors: usize,
) -> BTreeMap<u32, ProcessInfo> {
    let mut out: BTreeMap<u32, ProcessInfo> = BTreeMap::new();
    for pid in pids {
        let mut next = Some(pid);
        let mut depth = 0;
        while let Some(p) = next {
            if p == 0 || depth > max_ancestors || out.contains_key(&p) {
                break;
            }
            let Some(info) = read_process(proc_root, p) else {
                break;
            };
            next = info.ppid;
            out.insert(p, info);
            depth += 1;
        }
    }
    out
}

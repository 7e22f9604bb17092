//! Blocker -> blocked edges turned into lock trees rooted at the sessions that actually hold things up.
//!
//! `pg_blocking_pids()` gives, for each waiting backend, the backends it waits for. What a person
//! triaging an incident needs is the other direction: which session is at the *root* (it blocks others
//! and waits for nobody), how deep the chain goes and how many sessions it holds up transitively.
//! Flat blocker/blocked lists (what pg_activity and pg_glimpse show) hide that.
//!
//! The graph is generic over the node key so that nodes from several servers never mix (a pid is only
//! unique within one server). It is total: cycles (a deadlock caught before the detector fires, or
//! soft-block queues) and nodes shared by several trees are handled, and tree expansion is bounded.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How many rows one tree expansion may produce; a pathological DAG cannot blow up the view.
pub const MAX_TREE_ROWS: usize = 2_000;

/// A root of a lock tree with its reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root<K> {
    pub key: K,
    /// Distinct sessions held up, directly or through others.
    pub victims: usize,
    /// The deepest row of the tree as drawn ([`LockGraph::expand`]; 1 = only direct waiters). The
    /// one definition of depth: the JSON, the text report and the dashboard all show this.
    pub depth: usize,
    /// No true root exists for this group (everything in it waits for something else): the key is the
    /// smallest member of the cycle.
    pub in_cycle: bool,
}

/// One line of an expanded tree: `depth` 0 is the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeRow<K> {
    pub key: K,
    pub depth: usize,
    /// This session is drawn in full on an earlier row of the same tree (it waits for several
    /// blockers, or closes a cycle): this row only refers to it and is not expanded.
    pub reference: bool,
}

/// The analysed graph.
#[derive(Debug, Clone)]
pub struct LockGraph<K: Ord + Clone> {
    /// blocker -> the sessions it blocks (sorted, no duplicates).
    children: BTreeMap<K, BTreeSet<K>>,
    /// blocked -> the sessions it waits for.
    parents: BTreeMap<K, BTreeSet<K>>,
    roots: Vec<Root<K>>,
}

impl<K: Ord + Clone> LockGraph<K> {
    /// Builds the graph from `(blocker, blocked)` pairs. Duplicates (a parallel-query pid reported
    /// twice) and self-edges are dropped.
    pub fn build(edges: impl IntoIterator<Item = (K, K)>) -> Self {
        let mut children: BTreeMap<K, BTreeSet<K>> = BTreeMap::new();
        let mut parents: BTreeMap<K, BTreeSet<K>> = BTreeMap::new();
        for (blocker, blocked) in edges {
            if blocker == blocked {
                continue;
            }
            children
                .entry(blocker.clone())
                .or_default()
                .insert(blocked.clone());
            parents.entry(blocked).or_default().insert(blocker);
        }
        let mut graph = LockGraph {
            children,
            parents,
            roots: Vec::new(),
        };
        graph.roots = graph.find_roots();
        graph
    }

    fn find_roots(&self) -> Vec<Root<K>> {
        let mut roots: Vec<Root<K>> = self
            .children
            .keys()
            .filter(|k| !self.parents.contains_key(*k))
            .map(|k| self.measure(k, false))
            .collect();
        // Whatever no true root reaches sits in a cycle: pick the smallest key of each such group.
        let mut reached: BTreeSet<K> = BTreeSet::new();
        for r in &roots {
            reached.insert(r.key.clone());
            reached.extend(self.descendants(&r.key));
        }
        for k in self.children.keys() {
            if !reached.contains(k) {
                let group = self.descendants(k);
                reached.insert(k.clone());
                reached.extend(group);
                roots.push(self.measure(k, true));
            }
        }
        // Biggest trees first, then by key for a stable order.
        roots.sort_by(|a, b| b.victims.cmp(&a.victims).then_with(|| a.key.cmp(&b.key)));
        roots
    }

    fn measure(&self, key: &K, in_cycle: bool) -> Root<K> {
        let victims = self
            .descendants(key)
            .into_iter()
            .filter(|k| k != key)
            .count();
        Root {
            key: key.clone(),
            victims,
            depth: self.expand(key).iter().map(|r| r.depth).max().unwrap_or(0),
            in_cycle,
        }
    }

    /// Every node reachable downward (not including `key` unless a cycle leads back to it).
    pub fn descendants(&self, key: &K) -> BTreeSet<K> {
        self.walk(key, &self.children)
    }

    fn ancestors(&self, key: &K) -> BTreeSet<K> {
        self.walk(key, &self.parents)
    }

    fn walk(&self, key: &K, next: &BTreeMap<K, BTreeSet<K>>) -> BTreeSet<K> {
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<&K> = VecDeque::from([key]);
        while let Some(k) = queue.pop_front() {
            for n in next.get(k).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    queue.push_back(n);
                }
            }
        }
        seen
    }

    /// The blockers of `key` (empty for a root).
    pub fn blockers_of(&self, key: &K) -> impl Iterator<Item = &K> {
        self.parents.get(key).into_iter().flatten()
    }

    pub fn roots(&self) -> &[Root<K>] {
        &self.roots
    }

    pub fn is_blocked(&self, key: &K) -> bool {
        self.parents.contains_key(key)
    }

    pub fn is_blocking(&self, key: &K) -> bool {
        self.children.contains_key(key)
    }

    /// The root a blocker's chain leads to: of the roots above it (itself included), the one holding
    /// up the most sessions. `None` for a key that is in no edge.
    pub fn root_of(&self, key: &K) -> Option<&K> {
        if !self.children.contains_key(key) && !self.parents.contains_key(key) {
            return None;
        }
        let mut above = self.ancestors(key);
        above.insert(key.clone());
        // `roots` is sorted biggest first, so the first root above `key` is the answer.
        self.roots
            .iter()
            .find(|r| above.contains(&r.key))
            .map(|r| &r.key)
    }

    /// Expands one root into display rows, depth first. Each session is drawn in full once, at its
    /// first place in that order; a waiter with several blockers (or a session that closes a cycle)
    /// appears again under its other blockers as a [`TreeRow::reference`] row, not expanded. So the
    /// expansion is linear in the edges, and stops at [`MAX_TREE_ROWS`] anyway.
    pub fn expand(&self, root: &K) -> Vec<TreeRow<K>> {
        let mut rows = Vec::new();
        let mut drawn: BTreeSet<K> = BTreeSet::new();
        // An explicit stack (children pushed in reverse, to pop in order): no recursion depth limit.
        let mut stack: Vec<(K, usize)> = vec![(root.clone(), 0)];
        while let Some((key, depth)) = stack.pop() {
            if rows.len() >= MAX_TREE_ROWS {
                break;
            }
            let reference = !drawn.insert(key.clone());
            rows.push(TreeRow {
                key: key.clone(),
                depth,
                reference,
            });
            if !reference {
                for c in self.children.get(&key).into_iter().flatten().rev() {
                    stack.push((c.clone(), depth + 1));
                }
            }
        }
        rows
    }
}

/// The box-drawing prefix of each row of an expanded tree, from the rows' depths in order (depth
/// first, root at 0): `├─ ` for a row with a later sibling, `└─ ` for the last one, and `│  ` under
/// an ancestor that has a later sibling, so siblings read apart from children. The root's prefix
/// is empty. Pure and shared by the text report and (with [`compact_prefixes`]) the dashboard.
pub fn tree_prefixes(depths: &[usize]) -> Vec<String> {
    prefixes(depths, ["│  ", "   ", "├─ ", "└─ "])
}

/// [`tree_prefixes`] two columns per level, for the dashboard's narrow panes.
pub fn compact_prefixes(depths: &[usize]) -> Vec<String> {
    prefixes(depths, ["│ ", "  ", "├ ", "└ "])
}

fn prefixes(depths: &[usize], [bar, blank, tee, elbow]: [&str; 4]) -> Vec<String> {
    // Walking backwards: whether a later sibling exists at each depth under the current parent.
    let mut has_next = vec![false; depths.len()];
    let mut later: Vec<bool> = Vec::new();
    for (i, &d) in depths.iter().enumerate().rev() {
        if later.len() <= d {
            later.resize(d + 1, false);
        }
        has_next[i] = later[d];
        later[d] = true;
        later.truncate(d + 1);
    }
    // Walking forwards: the nearest row at each shallower depth is that row's ancestor.
    let mut ancestors: Vec<usize> = Vec::new();
    let mut out = Vec::with_capacity(depths.len());
    for (i, &d) in depths.iter().enumerate() {
        ancestors.truncate(d);
        let mut p = String::new();
        if d > 0 {
            for &a in ancestors.iter().skip(1) {
                p.push_str(if has_next[a] { bar } else { blank });
            }
            p.push_str(if has_next[i] { tee } else { elbow });
        }
        out.push(p);
        ancestors.push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chain_of_three_has_one_root() {
        // 1 blocks 2, 2 blocks 3.
        let g = LockGraph::build([(1, 2), (2, 3)]);
        assert_eq!(
            g.roots(),
            &[Root {
                key: 1,
                victims: 2,
                depth: 2,
                in_cycle: false
            }]
        );
        assert_eq!(g.root_of(&2), Some(&1));
        assert_eq!(g.root_of(&3), Some(&1));
        assert_eq!(g.root_of(&9), None);
        let rows: Vec<(i32, usize)> = g.expand(&1).into_iter().map(|r| (r.key, r.depth)).collect();
        assert_eq!(rows, vec![(1, 0), (2, 1), (3, 2)]);
        assert!(g.expand(&1).iter().all(|r| !r.reference));
    }

    #[test]
    fn shared_waiter_appears_under_each_blocker() {
        // 10 and 20 both block 30 (e.g. two share-lock holders ahead of an exclusive request).
        let g = LockGraph::build([(10, 30), (20, 30), (10, 30)]);
        let keys: Vec<i32> = g.roots().iter().map(|r| r.key).collect();
        assert_eq!(keys, vec![10, 20]);
        assert_eq!(g.expand(&10).len(), 2);
        assert_eq!(g.expand(&20).len(), 2);
    }

    /// Issue 11, finding 7: a waiter blocked twice inside one tree is drawn in full once; the other
    /// place refers to it; depth is the deepest row drawn.
    #[test]
    fn a_waiter_with_two_blockers_in_one_tree_is_drawn_in_full_once() {
        // 1 blocks 2 and 3; 2 and 3 both block 4; 4 blocks 5.
        let g = LockGraph::build([(1, 2), (1, 3), (2, 4), (3, 4), (4, 5)]);
        let rows: Vec<(i32, usize, bool)> = g
            .expand(&1)
            .into_iter()
            .map(|r| (r.key, r.depth, r.reference))
            .collect();
        assert_eq!(
            rows,
            vec![
                (1, 0, false),
                (2, 1, false),
                (4, 2, false),
                (5, 3, false),
                (3, 1, false),
                (4, 2, true),
            ]
        );
        assert_eq!(g.roots()[0].depth, 3);
        assert_eq!(g.roots()[0].victims, 4);
        let mut blockers: Vec<i32> = g.blockers_of(&4).copied().collect();
        blockers.sort();
        assert_eq!(blockers, vec![2, 3]);
    }

    #[test]
    fn prefixes_tell_siblings_from_children() {
        // root; a (children a1, a2 (child a2x)); b (child b1)
        let depths = [0, 1, 2, 2, 3, 1, 2];
        assert_eq!(
            tree_prefixes(&depths),
            vec!["", "├─ ", "│  ├─ ", "│  └─ ", "│     └─ ", "└─ ", "   └─ ",]
        );
        assert_eq!(
            compact_prefixes(&depths),
            vec!["", "├ ", "│ ├ ", "│ └ ", "│   └ ", "└ ", "  └ "]
        );
        assert_eq!(tree_prefixes(&[0]), vec![""]);
        assert!(tree_prefixes(&[]).is_empty());
    }

    #[test]
    fn biggest_tree_first_and_root_of_prefers_it() {
        let g = LockGraph::build([(1, 5), (2, 5), (2, 6), (2, 7)]);
        assert_eq!(g.roots()[0].key, 2);
        assert_eq!(g.roots()[0].victims, 3);
        assert_eq!(g.root_of(&5), Some(&2));
    }

    #[test]
    fn cycle_gets_a_pseudo_root() {
        let g = LockGraph::build([(1, 2), (2, 3), (3, 1), (3, 4)]);
        assert_eq!(g.roots().len(), 1);
        let r = &g.roots()[0];
        assert_eq!(r.key, 1);
        assert!(r.in_cycle);
        let rows = g.expand(&1);
        assert!(rows.len() <= 6, "{rows:?}");
        assert_eq!(g.root_of(&4), Some(&1));
    }

    proptest! {
        #[test]
        fn every_blocked_node_has_a_root_and_expansion_is_bounded(
            edges in proptest::collection::vec((0u8..30, 0u8..30), 0..120)
        ) {
            let g = LockGraph::build(edges.clone());
            for (blocker, blocked) in edges {
                if blocker == blocked { continue; }
                let root = g.root_of(&blocked).expect("blocked node reaches a root");
                prop_assert!(g.roots().iter().any(|r| &r.key == root));
                prop_assert!(g.root_of(&blocker).is_some());
            }
            for r in g.roots() {
                let rows = g.expand(&r.key);
                prop_assert!(!rows.is_empty() && rows.len() <= MAX_TREE_ROWS);
                prop_assert_eq!(rows[0].depth, 0);
                // One definition of depth; every session drawn in full exactly once; a row's
                // depth is its parent's plus one.
                prop_assert_eq!(r.depth, rows.iter().map(|x| x.depth).max().unwrap());
                let full: Vec<u8> = rows.iter().filter(|x| !x.reference).map(|x| x.key).collect();
                let unique: std::collections::BTreeSet<u8> = full.iter().copied().collect();
                prop_assert_eq!(full.len(), unique.len());
                let mut descendants = g.descendants(&r.key);
                descendants.insert(r.key);
                prop_assert_eq!(unique, descendants);
                for w in rows.windows(2) {
                    prop_assert!(w[1].depth <= w[0].depth + 1);
                }
                prop_assert_eq!(tree_prefixes(&rows.iter().map(|x| x.depth).collect::<Vec<_>>()).len(), rows.len());
            }
        }
    }
}

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
    /// Longest chain below the root (1 = only direct waiters).
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
            depth: self.depth_below(key),
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

    /// Longest simple path below `key` by BFS layers over distinct nodes (bounded by node count).
    fn depth_below(&self, key: &K) -> usize {
        let mut depth = 0;
        let mut seen: BTreeSet<&K> = BTreeSet::from([key]);
        let mut layer: Vec<&K> = vec![key];
        // BFS layers give the shortest distance to each node; the deepest layer is the chain length
        // a person reads in the tree, which is what this reports.
        while !layer.is_empty() {
            let mut next = Vec::new();
            for k in layer {
                for c in self.children.get(k).into_iter().flatten() {
                    if seen.insert(c) {
                        next.push(c);
                    }
                }
            }
            if !next.is_empty() {
                depth += 1;
            }
            layer = next;
        }
        depth
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

    /// Expands one root into display rows, depth first. A waiter blocked by several blockers appears
    /// under each; a node already on the current path is not expanded again (cycles), and the whole
    /// expansion stops at [`MAX_TREE_ROWS`].
    pub fn expand(&self, root: &K) -> Vec<TreeRow<K>> {
        let mut rows = Vec::new();
        let mut path: Vec<K> = Vec::new();
        self.expand_into(root, 0, &mut path, &mut rows);
        rows
    }

    fn expand_into(&self, key: &K, depth: usize, path: &mut Vec<K>, rows: &mut Vec<TreeRow<K>>) {
        if rows.len() >= MAX_TREE_ROWS {
            return;
        }
        rows.push(TreeRow {
            key: key.clone(),
            depth,
        });
        if path.contains(key) {
            return;
        }
        path.push(key.clone());
        for c in self.children.get(key).into_iter().flatten() {
            self.expand_into(c, depth + 1, path, rows);
        }
        path.pop();
    }
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
            }
        }
    }
}

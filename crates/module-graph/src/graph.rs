//! The graph between a crate's top-level modules, its cycles, and how they are printed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::PathBuf;

/// One place in the source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    /// The file, as reached from the crate directory the check was given.
    pub file: PathBuf,
    /// 1-based.
    pub line: u32,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The dependencies between the top-level modules of one crate (a library or a binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// Names the crate in reports: its directory and `(lib)` or `(bin)`.
    pub label: String,
    /// Every top-level module.
    pub modules: BTreeSet<String>,
    /// `from -> to`, with the first place found that makes it.
    pub edges: BTreeMap<(String, String), Site>,
}

/// A cycle: `modules[0] -> modules[1] -> ... -> modules[0]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cycle {
    /// Starts at its alphabetically first module; the closing edge back to it is implied.
    pub modules: Vec<String>,
}

impl Cycle {
    /// The edges in order, the closing one last.
    pub fn edges(&self) -> impl Iterator<Item = (&str, &str)> {
        let n = self.modules.len();
        (0..n).map(move |i| (self.modules[i].as_str(), self.modules[(i + 1) % n].as_str()))
    }
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.modules {
            write!(f, "{m} -> ")?;
        }
        match self.modules.first() {
            Some(first) => write!(f, "{first}"),
            None => Ok(()),
        }
    }
}

impl Graph {
    /// An empty graph.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            modules: BTreeSet::new(),
            edges: BTreeMap::new(),
        }
    }

    /// Whether `from` depends on `to`.
    pub fn has_edge(&self, from: &str, to: &str) -> bool {
        self.edges.contains_key(&(from.to_owned(), to.to_owned()))
    }

    /// For every edge that lies on a cycle, the shortest cycle through it; each cycle once,
    /// shortest first. Listing all simple cycles could run to thousands on a tangled crate;
    /// this list stays within the number of edges and still shows every edge that has to go.
    pub fn cycles(&self) -> Vec<Cycle> {
        let component = self.strongly_connected();
        let mut found = BTreeSet::new();
        for (from, to) in self.edges.keys() {
            let (Some(a), Some(b)) = (component.get(from), component.get(to)) else {
                continue;
            };
            if a != b || from == to {
                continue;
            }
            if let Some(mut path) = self.shortest_path(to, from) {
                path.insert(0, from.clone());
                path.pop();
                found.insert(Cycle {
                    modules: rotate_to_first(path),
                });
            }
        }
        let mut cycles: Vec<Cycle> = found.into_iter().collect();
        cycles.sort_by(|a, b| a.modules.len().cmp(&b.modules.len()).then(a.cmp(b)));
        cycles
    }

    fn successors<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.edges
            .keys()
            .filter(move |(from, _)| from == node)
            .map(|(_, to)| to)
    }

    /// `start ... goal` by breadth-first search, both ends included.
    fn shortest_path(&self, start: &str, goal: &str) -> Option<Vec<String>> {
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        came_from.insert(start, start);
        while let Some(node) = queue.pop_front() {
            if node == goal {
                let mut path = vec![goal.to_owned()];
                let mut at = goal;
                while at != start {
                    at = came_from.get(at)?;
                    path.push(at.to_owned());
                }
                path.reverse();
                return Some(path);
            }
            for next in self.successors(node) {
                if !came_from.contains_key(next.as_str()) {
                    came_from.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// Each node's strongly connected component, numbered (Tarjan's algorithm). The graphs are
    /// a few dozen nodes, so recursion depth is no concern.
    fn strongly_connected(&self) -> BTreeMap<String, usize> {
        let mut t = Tarjan {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            component: BTreeMap::new(),
            next_index: 0,
            next_component: 0,
        };
        let nodes: BTreeSet<&str> = self
            .modules
            .iter()
            .map(String::as_str)
            .chain(
                self.edges
                    .keys()
                    .flat_map(|(a, b)| [a.as_str(), b.as_str()]),
            )
            .collect();
        for node in nodes {
            if !t.index.contains_key(node) {
                t.visit(node);
            }
        }
        t.component
    }
}

struct Tarjan<'g> {
    graph: &'g Graph,
    index: BTreeMap<&'g str, usize>,
    low: BTreeMap<&'g str, usize>,
    stack: Vec<&'g str>,
    on_stack: BTreeSet<&'g str>,
    component: BTreeMap<String, usize>,
    next_index: usize,
    next_component: usize,
}

impl<'g> Tarjan<'g> {
    // Indexing `low` and `index` cannot panic: a node gets both entries before its edges are
    // followed, and `next` has them once `visit(next)` returns or `index` holds it.
    fn visit(&mut self, node: &'g str) {
        let index = self.next_index;
        self.next_index += 1;
        self.index.insert(node, index);
        self.low.insert(node, index);
        self.stack.push(node);
        self.on_stack.insert(node);
        for next in self.graph.successors(node) {
            let next = next.as_str();
            if !self.index.contains_key(next) {
                self.visit(next);
                let low = self.low[node].min(self.low[next]);
                self.low.insert(node, low);
            } else if self.on_stack.contains(next) {
                let low = self.low[node].min(self.index[next]);
                self.low.insert(node, low);
            }
        }
        if self.low[node] == index {
            while let Some(member) = self.stack.pop() {
                self.on_stack.remove(member);
                self.component
                    .insert(member.to_owned(), self.next_component);
                if member == node {
                    break;
                }
            }
            self.next_component += 1;
        }
    }
}

fn rotate_to_first(mut path: Vec<String>) -> Vec<String> {
    if let Some(first) = path
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.cmp(b.1))
        .map(|(i, _)| i)
    {
        path.rotate_left(first);
    }
    path
}

/// A graph's verdict as the command prints it: the cycles, each edge with a site that makes it.
pub fn render(graph: &Graph) -> String {
    use fmt::Write as _;
    let cycles = graph.cycles();
    let mut out = String::new();
    let modules = graph.modules.len();
    if cycles.is_empty() {
        let _ = writeln!(out, "{}: no cycle ({modules} modules)", graph.label);
        return out;
    }
    let _ = writeln!(
        out,
        "{}: {} cycle(s) among {modules} modules",
        graph.label,
        cycles.len()
    );
    for cycle in &cycles {
        let _ = writeln!(out, "  {cycle}");
        for (from, to) in cycle.edges() {
            let site = graph.edges.get(&(from.to_owned(), to.to_owned()));
            let site = site.map_or_else(|| "?".to_owned(), Site::to_string);
            let _ = writeln!(out, "    {from} -> {to}  {site}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new("test");
        for (i, (a, b)) in edges.iter().enumerate() {
            g.modules.insert((*a).to_owned());
            g.modules.insert((*b).to_owned());
            let site = Site {
                file: PathBuf::from(format!("{a}.rs")),
                line: u32::try_from(i).unwrap_or(0) + 1,
            };
            g.edges.insert(((*a).to_owned(), (*b).to_owned()), site);
        }
        g
    }

    fn names(cycles: &[Cycle]) -> Vec<String> {
        cycles.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_chain_has_no_cycle() {
        assert!(
            graph(&[("a", "b"), ("b", "c"), ("a", "c")])
                .cycles()
                .is_empty()
        );
    }

    #[test]
    fn each_edge_on_a_cycle_gets_its_shortest_cycle() {
        // b <-> c and the ring a -> b -> c -> a share the edges b -> c.
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "b"), ("c", "d")]);
        assert_eq!(names(&g.cycles()), ["b -> c -> b", "a -> b -> c -> a"]);
    }

    #[test]
    fn render_names_a_site_for_every_edge() {
        let text = render(&graph(&[("a", "b"), ("b", "a")]));
        assert!(text.contains("test: 1 cycle(s) among 2 modules"), "{text}");
        assert!(text.contains("a -> b -> a"), "{text}");
        assert!(text.contains("a -> b  a.rs:1"), "{text}");
        assert!(text.contains("b -> a  b.rs:2"), "{text}");
    }
}

//! The plan: steps expanded into nodes, in one petgraph DAG. `plan`, `graph` and `run` all read it, so what the
//! dry run shows is what runs.

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::diagnostic::Diagnostic;
use crate::event::NodeInfo;
use crate::step::{Catalog, Expansion, Part, PlanContext, Upstream};
use crate::validate::{Invalid, ValidPipeline};

/// One node of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanNode {
    /// The step's id, or `<step>/<part>`. Shared with the walker and the events: one allocation per node.
    pub id: Arc<str>,
    /// Index of the step in the pipeline.
    pub step: usize,
    pub kind: &'static str,
    pub description: Arc<str>,
    /// Its parts are only known once its inputs exist; the walker splices them in.
    pub expands_at_run_time: bool,
}

impl PlanNode {
    pub fn part(&self) -> Option<&str> {
        part_of(&self.id)
    }
}

/// The part of an expanded step a node id names: what follows `<step>/` (a step id holds no `/`); `None` for a
/// step's own node. Parts spliced in at run time are named the same way.
pub fn part_of(node_id: &str) -> Option<&str> {
    node_id.split_once('/').map(|(_, part)| part)
}

/// The DAG of nodes, edges from a node to the nodes that need it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub pipeline: ValidPipeline,
    pub graph: DiGraph<PlanNode, ()>,
}

impl Plan {
    /// Expand every step and connect the nodes. A step that cannot be planned gives the file back with every
    /// such error.
    pub fn build(pipeline: ValidPipeline, catalog: &dyn Catalog, ctx: &PlanContext) -> Result<Plan, Invalid> {
        let steps = &pipeline.loaded.pipeline.steps;
        let mut graph = DiGraph::with_capacity(steps.len(), steps.len() * 2);
        let mut errors = Vec::new();
        // A step's nodes are added one after the other: their indices are a range.
        let mut nodes_of: Vec<std::ops::Range<u32>> = Vec::with_capacity(steps.len());
        let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        // What parts provide and consume (assets and the stacks that use them): only while connecting steps.
        let mut provides: HashMap<u32, Vec<String>> = HashMap::new();
        let mut consumes: HashMap<u32, Vec<String>> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            let kind = step.kind.name();
            let expansion = catalog.expand(step, ctx, Upstream::new(steps, &index, i)).unwrap_or_else(|message| {
                let span = pipeline.loaded.source_map().nearest(&format!("steps[{i}].kind"));
                errors.push(Diagnostic::error(format!("cannot plan `{}`: {message}", step.id), span));
                Expansion::Single
            });
            let first = graph.node_count() as u32;
            match expansion {
                Expansion::Single | Expansion::AtRunTime => {
                    let at_run_time = matches!(expansion, Expansion::AtRunTime);
                    graph.add_node(PlanNode {
                        id: Arc::from(step.id.as_str()),
                        step: i,
                        kind,
                        description: Arc::from(catalog.describe(step, None)),
                        expands_at_run_time: at_run_time,
                    });
                }
                Expansion::Parts(parts) => {
                    let by_name: HashMap<&str, NodeIndex> = parts
                        .iter()
                        .map(|p| {
                            let node = graph.add_node(part_node(&step.id, i, kind, p));
                            if !p.provides.is_empty() {
                                provides.insert(node.index() as u32, p.provides.clone());
                            }
                            if let Some(c) = &p.consumes {
                                consumes.insert(node.index() as u32, c.clone());
                            }
                            (p.name.as_str(), node)
                        })
                        .collect();
                    for p in &parts {
                        for need in &p.needs {
                            match by_name.get(need.as_str()) {
                                Some(&from) => {
                                    graph.add_edge(from, by_name[p.name.as_str()], ());
                                }
                                None => {
                                    let span = pipeline.loaded.source_map().nearest(&format!("steps[{i}].kind"));
                                    errors.push(Diagnostic::error(
                                        format!("`{}/{}` depends on unknown part `{need}`", step.id, p.name),
                                        span,
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            nodes_of.push(first..graph.node_count() as u32);
        }
        for (i, step) in steps.iter().enumerate() {
            for need in &step.needs {
                let n = index[need.as_str()];
                for from in nodes_of[n].clone() {
                    for to in nodes_of[i].clone() {
                        // A node that says what it consumes waits only for the providers of it (a stack for its
                        // template and assets, not for every asset of the Publish it needs).
                        if let (Some(p), Some(c)) = (provides.get(&from), consumes.get(&to)) {
                            if !p.iter().any(|k| c.contains(k)) {
                                continue;
                            }
                        }
                        graph.add_edge(NodeIndex::new(from as usize), NodeIndex::new(to as usize), ());
                    }
                }
            }
        }
        if petgraph::algo::toposort(&graph, None).is_err() {
            let needs = |i: usize| graph.neighbors_directed(NodeIndex::new(i), Direction::Incoming).map(|n| n.index());
            for cycle in crate::validate::find_cycles(graph.node_count(), |i| needs(i).collect()) {
                let node = &graph[NodeIndex::new(cycle[0])];
                let spelled = crate::validate::spell_cycle(cycle.iter().rev().map(|&i| &*graph[NodeIndex::new(i)].id));
                let span = pipeline.loaded.source_map().nearest(&format!("steps[{}].kind", node.step));
                let step = crate::diagnostic::elide(&steps[node.step].id, crate::diagnostic::MAX_QUOTED);
                errors.push(Diagnostic::error(
                    format!("the parts of `{step}` depend on each other in a cycle: {spelled}"),
                    span,
                ));
            }
        }
        if errors.is_empty() {
            Ok(Plan { pipeline, graph })
        } else {
            Err(Invalid { loaded: Box::new(pipeline.loaded), diagnostics: errors })
        }
    }

    /// Sets of nodes that can run together: wave k holds the nodes whose longest chain of needs has k links.
    pub fn waves(&self) -> Vec<Vec<NodeIndex>> {
        let order = petgraph::algo::toposort(&self.graph, None).unwrap_or_default();
        let mut level = vec![0usize; self.graph.node_count()];
        for &n in &order {
            let l = self.graph.edges_directed(n, Direction::Incoming).map(|e| level[e.source().index()] + 1).max();
            level[n.index()] = l.unwrap_or(0);
        }
        let mut waves: Vec<Vec<NodeIndex>> = Vec::new();
        for n in self.graph.node_indices() {
            let l = level[n.index()];
            if waves.len() <= l {
                waves.resize(l + 1, Vec::new());
            }
            waves[l].push(n);
        }
        waves
    }

    /// Ids of the nodes a node needs, in plan order.
    pub fn needs_of(&self, n: NodeIndex) -> Vec<Arc<str>> {
        let mut needs: Vec<NodeIndex> = self.graph.neighbors_directed(n, Direction::Incoming).collect();
        needs.sort();
        needs.into_iter().map(|m| self.graph[m].id.clone()).collect()
    }

    /// The nodes as announced in events.
    pub fn node_infos(&self) -> Vec<NodeInfo> {
        self.graph.node_indices().map(|n| self.info(n)).collect()
    }

    pub fn info(&self, n: NodeIndex) -> NodeInfo {
        let node = &self.graph[n];
        // A step's own node has the step's id: share it rather than copy it.
        let step = match node.part() {
            None => node.id.clone(),
            Some(_) => Arc::from(self.pipeline.loaded.pipeline.steps[node.step].id.as_str()),
        };
        NodeInfo {
            id: node.id.clone(),
            step,
            kind: node.kind,
            needs: self.needs_of(n),
            description: node.description.clone(),
        }
    }
}

/// The plan node of one part of an expanded step.
pub fn part_node(step_id: &str, step: usize, kind: &'static str, part: &Part) -> PlanNode {
    PlanNode {
        id: Arc::from(format!("{step_id}/{}", part.name)),
        step,
        kind,
        description: Arc::from(part.description.as_str()),
        expands_at_run_time: false,
    }
}

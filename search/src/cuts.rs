//! Every valid cut of a DAG: the down-closed sets of compute nodes (a node is on the sensor only
//! if every node it depends on is), excluding the empty set and the sets that compute a graph
//! output on the sensor, with at most `max_crossing` tensors crossing.

use std::collections::HashSet;

use splitnets_cost_model::graph::AnalyzedGraph;
use splitnets_cost_model::split::crossing_tensors;

#[derive(Debug, thiserror::Error)]
pub enum CutEnumError {
    #[error(
        "more than {0} down-closed node sets; the graph is too branchy to enumerate exhaustively (raise --max-states)"
    )]
    TooMany(usize),
}

/// A cut: which compute nodes run on the sensor, and the tensors that cross.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    pub on_sensor: Vec<bool>,
    pub crossing: Vec<usize>,
}

/// Enumerates the cuts. `max_states` bounds the search (all down-closed sets are visited, since
/// a cut with few crossing tensors can sit behind sets with many).
pub fn enumerate(
    g: &AnalyzedGraph,
    max_crossing: usize,
    max_states: usize,
) -> Result<Vec<Cut>, CutEnumError> {
    let n = g.nodes.len();
    let words = n.div_ceil(64);
    // Producers of each node's data inputs.
    let preds: Vec<Vec<usize>> = g
        .nodes
        .iter()
        .map(|node| {
            node.inputs
                .iter()
                .filter_map(|&t| g.tensors[t].producer)
                .collect()
        })
        .collect();
    let output_producers: HashSet<usize> = g
        .outputs
        .iter()
        .filter_map(|&t| g.tensors[t].producer)
        .collect();
    let mut seen: HashSet<Vec<u64>> = HashSet::new();
    let mut stack: Vec<Vec<u64>> = vec![vec![0; words]];
    seen.insert(vec![0; words]);
    let mut cuts = Vec::new();
    let has = |set: &[u64], i: usize| set[i / 64] >> (i % 64) & 1 == 1;
    while let Some(set) = stack.pop() {
        let on_sensor: Vec<bool> = (0..n).map(|i| has(&set, i)).collect();
        if on_sensor.iter().any(|&x| x) && !output_producers.iter().any(|&p| on_sensor[p]) {
            let crossing =
                crossing_tensors(g, &on_sensor).expect("down-closed sets separate the graph");
            if crossing.len() <= max_crossing {
                cuts.push(Cut {
                    on_sensor,
                    crossing,
                });
            }
        }
        for i in 0..n {
            if has(&set, i)
                || output_producers.contains(&i)
                || !preds[i].iter().all(|&p| has(&set, p))
            {
                continue;
            }
            let mut next = set.clone();
            next[i / 64] |= 1 << (i % 64);
            if seen.insert(next.clone()) {
                if seen.len() > max_states {
                    return Err(CutEnumError::TooMany(max_states));
                }
                stack.push(next);
            }
        }
    }
    // Deterministic order: by sensor node count, then by the set itself.
    cuts.sort_by(|a, b| {
        let ca = a.on_sensor.iter().filter(|&&x| x).count();
        let cb = b.on_sensor.iter().filter(|&&x| x).count();
        ca.cmp(&cb).then_with(|| a.on_sensor.cmp(&b.on_sensor))
    });
    Ok(cuts)
}

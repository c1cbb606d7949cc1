//! Evolutionary search under cost constraints, and the Pareto front (pure logic: the accuracy of a
//! subnet comes from a caller-supplied evaluator, which caches).

use serde::{Deserialize, Serialize};

use crate::Rng;
use crate::cost::{Constraints, PredictedCost};
use crate::space::{Arch, SearchSpace};

/// Population sizes and rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvoSettings {
    pub population: usize,
    pub generations: usize,
    /// Parents kept per generation.
    pub parents: usize,
    pub mutation_prob: f64,
    /// Fraction of children made by crossover (the rest by mutation).
    pub crossover_fraction: f64,
    /// Draws allowed to find a subnet satisfying the constraints.
    pub max_resample: usize,
    /// Random draws per split position from which the largest feasible subnet seeds the
    /// population (0: no such seeds). Costs are predicted, not measured, so draws are cheap.
    #[serde(default)]
    pub fill_draws: usize,
}

/// One evaluated subnet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub arch: Arch,
    pub cost: PredictedCost,
    pub val_accuracy: f64,
}

/// Runs the evolution for one constraint set. `cost` predicts, `evaluate` measures validation
/// accuracy (expensive: the caller caches by architecture). Returns the best feasible candidate
/// found, if any.
pub fn evolve(
    space: &SearchSpace,
    evo: &EvoSettings,
    limits: &Constraints,
    rng: &mut Rng,
    cost: &mut dyn FnMut(&Arch) -> PredictedCost,
    evaluate: &mut dyn FnMut(&Arch) -> f64,
) -> Option<Candidate> {
    let feasible = |a: &Arch, cost: &mut dyn FnMut(&Arch) -> PredictedCost| {
        let c = cost(a);
        c.satisfies(limits).then_some(c)
    };
    let mut population: Vec<Candidate> = Vec::new();
    // The smallest (and, where feasible, the largest) subnet at every split position, then
    // random feasible subnets.
    let corners = (1..=space.split_positions())
        .flat_map(|split| [Arch::smallest(space, split), Arch::largest(space, split)]);
    for a in corners {
        if let Some(c) = feasible(&a, &mut *cost) {
            let acc = evaluate(&a);
            population.push(Candidate {
                arch: a,
                cost: c,
                val_accuracy: acc,
            });
        }
    }
    // Budget-filling seeds: at every split position, the subnet with the most
    // multiply-accumulates among random draws that still meets the limits. Random draws mostly
    // land far below a tight latency target, where the most accurate network is usually one
    // that uses the budget; without these the search never met the largest network a baseline
    // fits under the same target.
    for split in 1..=space.split_positions() {
        let draws: Vec<Arch> = (0..evo.fill_draws)
            .map(|_| Arch::random_at_split(space, split, rng))
            .collect();
        if let Some((a, c)) = most_compute_within(draws, limits, &mut *cost)
            && !population.iter().any(|p| p.arch == a)
        {
            let acc = evaluate(&a);
            population.push(Candidate {
                arch: a,
                cost: c,
                val_accuracy: acc,
            });
        }
    }
    let mut tries = 0;
    while population.len() < evo.population && tries < evo.max_resample * evo.population {
        tries += 1;
        let a = Arch::random(space, rng);
        if population.iter().any(|p| p.arch == a) {
            continue;
        }
        if let Some(c) = feasible(&a, &mut *cost) {
            let acc = evaluate(&a);
            population.push(Candidate {
                arch: a,
                cost: c,
                val_accuracy: acc,
            });
        }
    }
    if population.is_empty() {
        return None;
    }
    for _ in 0..evo.generations {
        population.sort_by(|a, b| b.val_accuracy.total_cmp(&a.val_accuracy));
        population.truncate(evo.parents.max(1));
        let parents = population.clone();
        let mut children = 0;
        let mut tries = 0;
        while children < evo.population.saturating_sub(parents.len())
            && tries < evo.max_resample * evo.population
        {
            tries += 1;
            let p1 = &parents[rng.below(parents.len() as u64) as usize].arch;
            let child = if rng.next_f64() < evo.crossover_fraction && parents.len() > 1 {
                let p2 = &parents[rng.below(parents.len() as u64) as usize].arch;
                p1.crossover(p2, space, rng)
            } else {
                p1.mutate(space, evo.mutation_prob, rng)
            };
            if population.iter().any(|p| p.arch == child) {
                continue;
            }
            if let Some(c) = feasible(&child, &mut *cost) {
                let acc = evaluate(&child);
                population.push(Candidate {
                    arch: child,
                    cost: c,
                    val_accuracy: acc,
                });
                children += 1;
            }
        }
    }
    population
        .into_iter()
        .max_by(|a, b| a.val_accuracy.total_cmp(&b.val_accuracy))
}

/// The subnet of `pool` with the most multiply-accumulates (sensor and aggregator) that meets
/// `limits`, with its predicted cost; on a tie, the last one.
pub fn most_compute_within(
    pool: impl IntoIterator<Item = Arch>,
    limits: &Constraints,
    cost: &mut dyn FnMut(&Arch) -> PredictedCost,
) -> Option<(Arch, PredictedCost)> {
    pool.into_iter()
        .filter_map(|a| {
            let c = cost(&a);
            c.satisfies(limits).then_some((a, c))
        })
        .max_by_key(|(_, c)| c.sensor_macs + c.aggregator_macs)
}

/// The candidates no other candidate beats on both end-to-end latency (lower) and validation
/// accuracy (higher), sorted by latency.
pub fn pareto_front(all: &[Candidate]) -> Vec<Candidate> {
    let mut front: Vec<Candidate> = all
        .iter()
        .filter(|c| {
            !all.iter().any(|o| {
                o.cost.end_to_end_seconds <= c.cost.end_to_end_seconds
                    && o.val_accuracy >= c.val_accuracy
                    && (o.cost.end_to_end_seconds < c.cost.end_to_end_seconds
                        || o.val_accuracy > c.val_accuracy)
            })
        })
        .cloned()
        .collect();
    front.sort_by(|a, b| {
        a.cost
            .end_to_end_seconds
            .total_cmp(&b.cost.end_to_end_seconds)
    });
    front.dedup_by(|a, b| a.arch == b.arch);
    front
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::predict;
    use splitnets_cost_model::profile::HardwareProfile;

    #[test]
    fn evolution_finds_a_better_subnet_than_its_start_under_a_proxy_score() {
        let space = SearchSpace::standard(28, 4, 10);
        let p: HardwareProfile =
            toml::from_str(splitnets_cost_model::profile::presets::HEADSET).unwrap();
        let big = predict(&space, &Arch::largest(&space, 3), &p, 30.0);
        let limits = Constraints {
            latency_seconds: big.end_to_end_seconds * 0.6,
            target_fps: 30.0,
        };
        // Proxy accuracy: grows with parameters; the search must climb it within the limit.
        let mut cost = |a: &Arch| predict(&space, a, &p, 30.0);
        let mut evals = 0;
        let mut eval = |a: &Arch| {
            evals += 1;
            (predict(&space, a, &p, 30.0).parameters as f64).ln()
        };
        let evo = EvoSettings {
            population: 12,
            generations: 6,
            parents: 4,
            mutation_prob: 0.2,
            crossover_fraction: 0.5,
            max_resample: 50,
            fill_draws: 0,
        };
        let mut rng = Rng::new(9);
        let best = evolve(&space, &evo, &limits, &mut rng, &mut cost, &mut eval).unwrap();
        assert!(best.cost.satisfies(&limits));
        let small = (predict(&space, &Arch::smallest(&space, 1), &p, 30.0).parameters as f64).ln();
        assert!(
            best.val_accuracy > small + 0.5,
            "{} vs {small}",
            best.val_accuracy
        );
        assert!(evals >= 12);
    }

    #[test]
    fn budget_filling_seeds_start_the_search_near_the_latency_limit() {
        let space = SearchSpace::standard(28, 4, 10);
        let p: HardwareProfile =
            toml::from_str(splitnets_cost_model::profile::presets::HEADSET).unwrap();
        let big = predict(&space, &Arch::largest(&space, 3), &p, 30.0);
        let limits = Constraints {
            latency_seconds: big.end_to_end_seconds * 0.4,
            target_fps: 30.0,
        };
        let run = |fill_draws: usize| {
            let mut cost = |a: &Arch| predict(&space, a, &p, 30.0);
            let mut eval = |a: &Arch| (predict(&space, a, &p, 30.0).parameters as f64).ln();
            // No generations and a population the corners already fill: the start alone.
            let evo = EvoSettings {
                population: 1,
                generations: 0,
                parents: 1,
                mutation_prob: 0.2,
                crossover_fraction: 0.5,
                max_resample: 50,
                fill_draws,
            };
            evolve(
                &space,
                &evo,
                &limits,
                &mut Rng::new(3),
                &mut cost,
                &mut eval,
            )
            .unwrap()
        };
        let (plain, seeded) = (run(0), run(400));
        assert!(seeded.cost.satisfies(&limits));
        assert!(
            seeded.val_accuracy > plain.val_accuracy + 0.5,
            "seeded {} vs corners only {}",
            seeded.val_accuracy,
            plain.val_accuracy
        );
        assert!(
            seeded.cost.end_to_end_seconds > 0.7 * limits.latency_seconds,
            "{} of {} s",
            seeded.cost.end_to_end_seconds,
            limits.latency_seconds
        );
    }

    #[test]
    fn pareto_front_drops_dominated_candidates() {
        let space = SearchSpace::standard(28, 1, 10);
        let p: HardwareProfile =
            toml::from_str(splitnets_cost_model::profile::presets::HEADSET).unwrap();
        let mk = |a: Arch, acc: f64| Candidate {
            cost: predict(&space, &a, &p, 30.0),
            arch: a,
            val_accuracy: acc,
        };
        let small = mk(Arch::smallest(&space, 1), 0.5);
        let big = mk(Arch::largest(&space, 1), 0.9);
        let bad = mk(Arch::largest(&space, 2), 0.4);
        let front = pareto_front(&[small.clone(), big.clone(), bad]);
        assert_eq!(front.len(), 2);
        assert_eq!(front[0].arch, small.arch);
        assert_eq!(front[1].arch, big.arch);
    }
}

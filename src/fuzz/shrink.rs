//! Shrinking against the live target: proptest's shrink loop (`TestRunner::shrink`: simplify while
//! the case still reproduces, complicate when it does not), where "reproduces" is a fresh run of
//! the case against the target with the same signature. Results are cached by case, since
//! proptest's trees revisit values they already know (an undone element deletion is re-tested).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::strategy::ValueTree;
use serde::{Deserialize, Serialize};

use super::Case;

/// Limits of one shrink: every trial is a live connection (or several, with a liveness check).
#[derive(Clone, Copy, Debug)]
pub struct ShrinkBudget {
    pub max_trials: u32,
    pub max_time: Duration,
}

impl Default for ShrinkBudget {
    fn default() -> Self {
        ShrinkBudget {
            max_trials: 400,
            max_time: Duration::from_secs(120),
        }
    }
}

/// What a shrink did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShrinkStats {
    /// Live trials run (cache hits not counted).
    pub trials: u32,
    /// Trials that reproduced the signature.
    pub reproduced: u32,
    pub elapsed_ms: u64,
    /// The budget ran out before the tree could not simplify further.
    pub budget_exhausted: bool,
}

/// Shrinks `tree` (whose current value reproduces) to the simplest value that still reproduces.
pub async fn shrink<F>(
    tree: &mut dyn ValueTree<Value = Case>,
    budget: ShrinkBudget,
    mut reproduces: F,
) -> (Case, ShrinkStats)
where
    F: AsyncFnMut(&Case) -> bool,
{
    let started = Instant::now();
    let mut last = tree.current();
    let mut cache: HashMap<String, bool> = HashMap::new();
    if let Ok(k) = serde_json::to_string(&last) {
        cache.insert(k, true);
    }
    let mut stats = ShrinkStats {
        trials: 0,
        reproduced: 0,
        elapsed_ms: 0,
        budget_exhausted: false,
    };
    if tree.simplify() {
        loop {
            if stats.trials >= budget.max_trials || started.elapsed() > budget.max_time {
                stats.budget_exhausted = true;
                break;
            }
            let candidate = tree.current();
            let key = serde_json::to_string(&candidate).unwrap_or_default();
            let hit = match cache.get(&key) {
                Some(v) => *v,
                None => {
                    stats.trials += 1;
                    let v = reproduces(&candidate).await;
                    cache.insert(key, v);
                    if v {
                        stats.reproduced += 1;
                    }
                    v
                }
            };
            if hit {
                last = candidate;
                if !tree.simplify() {
                    break;
                }
            } else if !tree.complicate() {
                break;
            }
        }
    }
    stats.elapsed_ms = started.elapsed().as_millis() as u64;
    (last, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::x224::X224Mutation;
    use crate::fuzz::FuzzStage;
    use proptest::strategy::Strategy;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    fn cookie(c: &Case) -> Option<u32> {
        let Case::X224(x) = c else { return None };
        x.mutations.iter().rev().find_map(|m| match m {
            X224Mutation::Cookie { len, .. } => Some(*len),
            _ => None,
        })
    }

    #[tokio::test]
    async fn shrinks_a_long_cookie_to_201_alone() {
        let strategy = Case::strategy(FuzzStage::X224);
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[3; 32]),
        );
        let mut found = 0;
        for _ in 0..3000 {
            let mut tree = strategy.new_tree(&mut runner).expect("tree");
            if cookie(&tree.current()).is_none_or(|l| l <= 200) {
                continue;
            }
            found += 1;
            let (min, stats) = shrink(&mut *tree, ShrinkBudget::default(), async |c: &Case| {
                cookie(c).is_some_and(|l| l > 200)
            })
            .await;
            let Case::X224(x) = &min else { panic!("stage") };
            assert_eq!(x.mutations.len(), 1, "{min:?}");
            assert_eq!(cookie(&min), Some(201), "{min:?}");
            assert!(stats.trials < 150, "{stats:?}");
            if found == 5 {
                break;
            }
        }
        assert_eq!(found, 5);
    }
}

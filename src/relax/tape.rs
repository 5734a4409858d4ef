//! A record of every layer update of a relaxation, for backpropagation through time.

use super::BlockState;
use crate::core::{PoolIndex, Tensor};

/// One layer update `s_l ← act(v / α)` (see [`super::Relaxation`]).
#[derive(Clone, Debug)]
pub struct UpdateEvent {
    pub layer: usize,
    /// Index of the new value in `Tape::values[layer]`.
    pub value: usize,
    /// Index of the value of `s_{l−1}` / `s_{l+1}` that the update read.
    pub prev_value: Option<usize>,
    pub next_value: Option<usize>,
    /// `α · pre` (clamped layers) or `pre`: what the activation was applied to.
    pub v: Tensor,
    /// Argmax of the pooled coupling below (bottom-up) and above (top-down), if pooled.
    pub bu_idx: Option<PoolIndex>,
    pub td_idx: Option<PoolIndex>,
}

/// Successive values of every layer and the updates that produced them.
#[derive(Clone, Debug)]
pub struct Tape {
    /// `values[l][m]` is the m-th value of layer `l` (0 = the starting state).
    pub values: Vec<Vec<Tensor>>,
    pub events: Vec<UpdateEvent>,
}

impl Tape {
    pub fn new(start: &BlockState) -> Self {
        Tape {
            values: start.layers.iter().map(|t| vec![t.clone()]).collect(),
            events: Vec::new(),
        }
    }

    pub(super) fn record(
        &mut self,
        layer: usize,
        new_value: &Tensor,
        v: Tensor,
        bu_idx: Option<PoolIndex>,
        td_idx: Option<PoolIndex>,
    ) {
        let n = self.values.len();
        let prev_value = (layer > 0).then(|| self.values[layer - 1].len() - 1);
        let next_value = (layer + 1 < n).then(|| self.values[layer + 1].len() - 1);
        self.values[layer].push(new_value.clone());
        let value = self.values[layer].len() - 1;
        self.events.push(UpdateEvent {
            layer,
            value,
            prev_value,
            next_value,
            v,
            bu_idx,
            td_idx,
        });
    }

    /// The latest value of every layer.
    pub fn final_state(&self) -> BlockState {
        BlockState {
            layers: self
                .values
                .iter()
                .map(|v| v.last().expect("initial value").clone())
                .collect(),
        }
    }
}

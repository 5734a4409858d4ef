//! A record of every layer update of a relaxation, for backpropagation through time.

use super::BlockState;
use crate::core::{PoolIndex, Tensor};

/// One layer update `s_l ← proj(z)` (see [`super::Relaxation`]).
#[derive(Clone, Debug)]
pub struct UpdateEvent {
    pub layer: usize,
    /// Index of the new value in `Tape::values[layer]`.
    pub value: usize,
    /// For every layer, the index in `Tape::values` of the value the update read.
    pub reads: Vec<usize>,
    /// What the projection was applied to (`α·pre` for a hard sigmoid, `b/q` for a resistive
    /// layer, `pre` for an identity layer).
    pub record: Tensor,
    /// For every interaction touching the layer: what it recorded (pool indices).
    pub aux: Vec<(usize, Option<PoolIndex>)>,
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
        record: Tensor,
        aux: Vec<(usize, Option<PoolIndex>)>,
    ) {
        let reads = self.values.iter().map(|v| v.len() - 1).collect();
        self.values[layer].push(new_value.clone());
        let value = self.values[layer].len() - 1;
        self.events.push(UpdateEvent {
            layer,
            value,
            reads,
            record,
            aux,
        });
    }

    /// The final value of the block's last layer (its output).
    pub fn final_output(&self) -> &Tensor {
        self.values
            .last()
            .and_then(|v| v.last())
            .expect("a layer with its initial value")
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

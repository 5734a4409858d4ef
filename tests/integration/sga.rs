//! The static-gradient-analysis preset at initialisation (the paper's Fig. 3 setting):
//! EP agrees with ID-exact on every tensor, and with ID-reference except where the
//! reference ignores a weight's top-down use (the paper reports 0.986 on the dense layer).

use crate::common;
use common::*;
use ffebm::grad::*;
use ffebm::model::{prepare, presets::preset, Model, ParamId};

#[test]
fn static_gradient_analysis_ep_agrees_with_id() {
    let p = preset("static_gradient_analysis", None).unwrap();
    let model = Model::new(p.model.clone(), 0).unwrap();
    let kern = prepare(&model).unwrap();
    let (x, y) = batch(&model, 2, 1);
    let cfg = GradConfig {
        t1: 15,
        t2: 20,
        beta: 0.02,
        tol: None,
        per_sample_tol: false,
        bn_updates: BnUpdates::OncePerBatch,
    };
    let ep = compute_gradients(&model, &kern, &x, &y, Algorithm::Ep, &cfg).unwrap();
    let id = compute_gradients(&model, &kern, &x, &y, Algorithm::IdExact, &cfg).unwrap();
    let idr = compute_gradients(&model, &kern, &x, &y, Algorithm::IdReference, &cfg).unwrap();
    for (pid, g) in &ep.grads.entries {
        if matches!(
            pid,
            ParamId::Synapse { bias: false, .. } | ParamId::Readout { bias: false }
        ) {
            let name = model.param_name(*pid);
            let c = cosine(g, id.grads.get(*pid));
            assert!(c >= 0.99, "{name}: EP vs ID-exact cosine {c}");
            let c = cosine(g, idr.grads.get(*pid));
            assert!(c >= 0.98, "{name}: EP vs ID-reference cosine {c}");
        }
    }
}

//! Profiling helper: repeated EP steps of a preset at a batch size.
use ffebm::core::testutil::random_tensor;
use ffebm::grad::*;
use ffebm::model::{prepare, presets::preset, Model};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("splitting_small_2block");
    let b: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let algo: Algorithm = args
        .get(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(Algorithm::Ep);
    let p = preset(name, None).unwrap();
    let model = Model::new(p.model.clone(), 0).unwrap();
    let kern = prepare(&model).unwrap();
    let [c, h, w] = p.model.input;
    let x = random_tensor(&[b, h, w, c], 1);
    let y: Vec<u32> = (0..b).map(|i| (i % 10) as u32).collect();
    let cfg = GradConfig {
        t1: p.algo.t1,
        t2: p.algo.t2,
        beta: p.algo.beta,
        tol: None,
        per_sample_tol: false,
        bn_updates: BnUpdates::OncePerBatch,
    };
    for _ in 0..2 {
        let t = std::time::Instant::now();
        compute_gradients(&model, &kern, &x, &y, algo, &cfg).unwrap();
        println!("{:.3} s", t.elapsed().as_secs_f64());
    }
}

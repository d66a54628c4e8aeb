//! How long a sandbox network takes to make and remove, against a bare network
//! namespace made and removed in the same run (root only):
//! `cargo run --release -p kiln --example net_setup -- [N]`.

use std::time::{Duration, Instant};

use kiln::net::{destroy_leftovers, leftovers_of, netns, NetConfig, Network};

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[((v.len() - 1) * p) / 100]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let (mut bare, mut create, mut destroy) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("knt-bench-{}-{i}", std::process::id());
        let t = Instant::now();
        netns::create(&name).expect("namespace");
        netns::remove(&name).expect("remove namespace");
        bare.push(t.elapsed());

        let id = format!("bench-{}-{i}", std::process::id());
        let t = Instant::now();
        let net = Network::create(&id, &NetConfig::default()).unwrap_or_else(|e| {
            let _ = destroy_leftovers(&id);
            panic!("{e}")
        });
        create.push(t.elapsed());
        let t = Instant::now();
        net.destroy().expect("destroy");
        destroy.push(t.elapsed());
        assert!(leftovers_of(&id).is_empty(), "{:?}", leftovers_of(&id));
    }
    let b50 = pct(&mut bare, 50);
    for (what, v) in [
        ("bare netns create+remove", &mut bare),
        ("network create", &mut create),
        ("network destroy", &mut destroy),
    ] {
        let (p50, p99) = (pct(v, 50), pct(v, 99));
        println!(
            "{what:<26} n={n} p50={:.2}ms p99={:.2}ms ratio_p50={:.1}",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            p50.as_secs_f64() / b50.as_secs_f64()
        );
    }
}

//! `seeds DIR [TARGET…]`: writes the seed corpus of each target (all by default) into
//! `DIR/TARGET/`, as the campaign script does before it starts libFuzzer.

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: seeds DIR [TARGET…]");
        std::process::exit(2);
    };
    let mut targets: Vec<String> = args.collect();
    if targets.is_empty() {
        targets = leakhunt_fuzz::TARGETS
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
    }
    for target in &targets {
        let out = dir.join(target);
        std::fs::create_dir_all(&out).expect("corpus directory");
        let seeds = leakhunt_fuzz::seeds::for_target(target);
        for (name, bytes) in &seeds {
            std::fs::write(out.join(name), bytes).expect("seed file");
        }
        println!("{target}: {} seeds", seeds.len());
    }
}

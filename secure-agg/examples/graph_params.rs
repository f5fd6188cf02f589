//! Prints the degree and threshold [`secure_agg::GraphParams::choose`] picks for a few
//! federation sizes and dropout/corruption rates.
//!
//! `cargo run -p secure-agg --example graph_params`

fn main() {
    println!(
        "{:>8} {:>8} {:>10} {:>7} {:>10}",
        "n", "dropout", "corruption", "degree", "threshold"
    );
    for n in [10, 20, 50, 100, 1000, 10_000, 100_000] {
        for (d, c) in [(0.05, 0.05), (0.1, 0.1), (0.2, 0.1), (0.3, 0.2)] {
            match secure_agg::GraphParams::choose(n, d, c) {
                Ok(p) => println!("{n:>8} {d:>8} {c:>10} {:>7} {:>10}", p.degree, p.threshold),
                Err(e) => println!("{n:>8} {d:>8} {c:>10} {e}"),
            }
        }
    }
}

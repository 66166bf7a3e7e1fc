//! Access tokens: `Tokens::issue` and `Tokens::validate` (HS256) per second, on one core.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo bench --bench tokens
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fechatter::auth::Tokens;

fn tokens(c: &mut Criterion) {
    let tokens = Tokens::new(b"bench-secret-0123456789-0123456789-abcdef", 3600, 86_400);
    let token = tokens.issue(42, 1).expect("issue").token;

    let mut g = c.benchmark_group("tokens");
    g.throughput(Throughput::Elements(1));
    g.bench_function("issue", |b| {
        b.iter(|| tokens.issue(black_box(42), black_box(1)).expect("issue"))
    });
    g.bench_function("validate", |b| {
        b.iter(|| tokens.validate(black_box(&token)).expect("valid"))
    });
    let forged = format!("{}x", &token[..token.len() - 1]);
    g.bench_function("validate_bad_signature", |b| {
        b.iter(|| tokens.validate(black_box(&forged)).is_err())
    });
    g.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);

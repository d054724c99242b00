//! In-process pricing: a 20-line basket against 50 active rules (issue 3 target: p99 ≤
//! 200 µs), with the same basket against an empty rule set measured in the same run as
//! the baseline.
//!
//! `cargo bench -p patron-edge --bench quote_engine`

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use hdrhistogram::Histogram;
use patron_domain::settings::PointsRules;
use patron_edge::domain::pricing::{Line, validate_lines};
use patron_edge::domain::promo::engine::{Input, MemberCtx, Usage, price};
use patron_edge::domain::promo::ruleset::{Compiled, RuleSet};
use patron_edge::domain::tiers::Tier;
use patron_protocol::pos::BasketLine;

fn setup(rules: usize) -> (Vec<Line>, Compiled) {
    let raw: Vec<BasketLine> = serde_json::from_value(common::basket_lines(20)).unwrap_or_default();
    let lines = validate_lines(&raw).unwrap_or_default();
    let set = RuleSet::parse(common::rules(rules).to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    (lines, set)
}

fn member() -> MemberCtx {
    MemberCtx {
        tier: Tier::Silver,
        tags: vec![],
        registered_at: 0,
        has_purchased: true,
        birthday_month: false,
        channel: None,
        balance: 10_000,
    }
}

fn quote(lines: &[Line], rules: &Compiled, m: &MemberCtx, cfg: &PointsRules, usage: &Usage) -> i64 {
    let input = Input {
        lines,
        member: Some(m),
        redeem_points: 0,
        coupons: &[],
        rules: Some(rules),
        usage,
        now: 1_795_579_200_000,
        store_id: "S001",
        points: cfg,
        explain: true,
    };
    price(&input).map(|p| p.total).unwrap_or(-1)
}

fn bench(c: &mut Criterion) {
    let (cfg, usage, m) = (PointsRules::default(), Usage::default(), member());
    for n in [0usize, 50] {
        let (lines, rules) = setup(n);
        c.bench_function(&format!("quote 20 lines, {n} rules"), |b| {
            b.iter(|| quote(black_box(&lines), &rules, &m, &cfg, &usage))
        });
    }
}

/// Per-call latency percentiles (criterion reports means and medians, not p99).
fn percentiles() {
    let (cfg, usage, m) = (PointsRules::default(), Usage::default(), member());
    let mut rows = Vec::new();
    for n in [0usize, 50] {
        let (lines, rules) = setup(n);
        let applied = quote(&lines, &rules, &m, &cfg, &usage);
        let mut h =
            Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap_or_else(|e| panic!("{e}"));
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            let t = Instant::now();
            black_box(quote(black_box(&lines), &rules, &m, &cfg, &usage));
            h.record(t.elapsed().as_nanos() as u64).ok();
        }
        rows.push((n, applied, h));
    }
    println!("\n| rules | calls | p50 µs | p99 µs | max µs | total (fen) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (n, total, h) in &rows {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {n} | {} | {:.1} | {:.1} | {:.1} | {total} |",
            h.len(),
            us(0.5),
            us(0.99),
            us(1.0)
        );
    }
    if let [(_, _, base), (_, _, full)] = &rows[..] {
        println!(
            "\n50 rules / 0 rules at p99: {:.2}×",
            full.value_at_quantile(0.99) as f64 / base.value_at_quantile(0.99) as f64
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    percentiles();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

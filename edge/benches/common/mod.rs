#![allow(dead_code)] // Shared by several benches; each uses a part.
//! Synthetic rule sets and baskets shared by the benchmarks.

use serde_json::{Value, json};

/// A rule set of `n` rules cycling through every kind, all active now, so the engine
/// evaluates each of them (the categories match the benchmark baskets).
pub fn rules(n: usize) -> Value {
    let cats = ["skincare", "food", "bags", "shoes", "toys"];
    let rules: Vec<Value> = (0..n)
        .map(|i| {
            let id = format!("r{i}");
            let cat = cats[i % cats.len()];
            match i % 6 {
                0 => json!({"id": id, "label": format!("{cat} 9折"), "type": "item_discount", "categories": [cat], "pay_permille": 900, "group": format!("g{}", i % 3)}),
                1 => json!({"id": id, "label": "A+B", "type": "bundle", "skus": [format!("SKU-{}", i % 20), format!("SKU-{}", (i + 1) % 20)], "price": 1000}),
                2 => json!({"id": id, "label": "满减", "type": "order_reduction", "threshold": 20000 + (i as i64) * 100, "off": 1000, "repeat": true, "cap": 5000, "group": "order"}),
                3 if std::env::var_os("BENCH_NO_GRANTS").is_some() => json!({"id": id, "label": "满减2", "type": "order_reduction", "threshold": 90000, "off": 500}),
                3 => json!({"id": id, "label": "赠券", "type": "coupon_grant", "threshold": 50000, "coupon": {"label": "¥5", "off": 500, "valid_days": 30}}),
                4 => json!({"id": id, "label": "多倍积分", "type": "points_multiplier", "multiplier": 2 + (i % 3) as i64, "categories": [cat]}),
                _ => json!({"id": id, "label": "会员价", "type": "item_discount", "pay_permille": 950, "audience": {"tiers": ["silver", "gold"]}, "group": "tier"}),
            }
        })
        .collect();
    json!({"version": format!("bench-{n}"), "rules": rules})
}

/// A basket of `n` lines over 20 SKUs and five categories.
pub fn basket_lines(n: usize) -> Value {
    let cats = ["skincare", "food", "bags", "shoes", "toys"];
    let lines: Vec<Value> = (0..n)
        .map(|i| json!({"sku": format!("SKU-{}", i % 20), "category": cats[i % 5], "qty": 1 + (i % 3) as i64, "unit_price": 1_990 + (i as i64) * 731}))
        .collect();
    Value::Array(lines)
}

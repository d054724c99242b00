//! Chain-wide stock of points-catalogue items (`CatalogueItem::stock_chain`): units the
//! whole chain may give in all, counted at the hub. A store reserves the units of a
//! sale at the hub before the sale queues; the hub counts the units every store's
//! sales gave (from their purchase facts' catalogue lines) and the units it reserved
//! for sales whose facts have not arrived. `docs/catalogue.md` has the rules.

use serde::Deserialize;

/// Largest chain-wide stock of one item.
pub const MAX_STOCK: u32 = 10_000_000;

/// The catalogue units per SKU a purchase fact's details (`body`, as the store wrote
/// them) record, in first-seen order: the lines marked `catalogue`. A body without
/// lines, or one that does not parse, records none.
pub fn catalogue_units(body: &str) -> Vec<(String, i64)> {
    #[derive(Deserialize)]
    struct Line {
        sku: String,
        qty: i64,
        #[serde(default)]
        catalogue: bool,
    }
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        lines: Vec<Line>,
    }
    let Ok(b) = serde_json::from_str::<Body>(body) else {
        return Vec::new();
    };
    let mut out: Vec<(String, i64)> = Vec::new();
    for l in b.lines.into_iter().filter(|l| l.catalogue && l.qty > 0) {
        match out.iter_mut().find(|(s, _)| *s == l.sku) {
            Some((_, n)) => *n = n.saturating_add(l.qty),
            None => out.push((l.sku, l.qty)),
        }
    }
    out
}

/// Units of an item with chain-wide `stock` still free when `given` were given and
/// `held` are reserved for sales on their way (never negative).
pub fn left(stock: u32, given: i64, held: i64) -> i64 {
    (i64::from(stock) - given.max(0) - held.max(0)).max(0)
}

/// Whether `units` more may be reserved.
pub fn allows(stock: u32, given: i64, held: i64, units: i64) -> bool {
    units > 0 && units <= left(stock, given, held)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn only_catalogue_lines_count_summed_per_sku() {
        let body = r#"{"receipt_id":"R1","subtotal":1,"total":1,"lines":[
            {"sku":"UMB","qty":2,"unit_price":990,"catalogue":true},
            {"sku":"A","qty":5,"unit_price":100},
            {"sku":"MUG","qty":1,"unit_price":0,"catalogue":true},
            {"sku":"UMB","qty":1,"unit_price":990,"catalogue":true}]}"#;
        assert_eq!(
            catalogue_units(body),
            vec![("UMB".to_string(), 3), ("MUG".to_string(), 1)]
        );
        assert!(catalogue_units(r#"{"receipt_id":"R1"}"#).is_empty());
        assert!(catalogue_units("not json").is_empty());
    }

    proptest! {
        /// Reserving one unit at a time from any starting point never passes the stock,
        /// and takes exactly what was left.
        #[test]
        fn reservations_never_pass_the_stock(stock in 0u32..200, given in 0i64..300, held in 0i64..300) {
            let mut held_now = held;
            let mut granted = 0;
            while allows(stock, given, held_now, 1) {
                held_now += 1;
                granted += 1;
            }
            prop_assert_eq!(granted, left(stock, given, held));
            prop_assert!(given + held_now <= i64::from(stock) || granted == 0);
        }
    }
}

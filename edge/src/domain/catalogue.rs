//! The points-for-goods catalogue at the till (积分+现金兑换商品): basket lines marked
//! `catalogue` are priced here, apart from the promotion engine: each unit costs the
//! item's points, taken from the member's balance like any redemption, and its money
//! part (`cash`), which the line's `unit_price` must state. They take no discount and
//! earn no points; their money counts in the sale's total and qualifying spend.

use patron_domain::rules::RuleSet;

use super::pricing::Line;

/// Most points one sale may take, catalogue and redemption together: the hub's
/// default limit for one fact (`FactLimits::max_points`).
pub const MAX_SALE_POINTS: i64 = 100_000;

/// What a basket's catalogue lines cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    /// Money, fen.
    pub cash: i64,
    /// Points.
    pub points: i64,
    /// Units per SKU, for the store's stock.
    pub units: Vec<(String, i64)>,
}

/// Splits validated lines into goods (for the engine) and catalogue lines.
pub fn split(lines: Vec<Line>) -> (Vec<Line>, Vec<Line>) {
    lines.into_iter().partition(|l| !l.catalogue)
}

/// Prices catalogue lines against the rule set's catalogue, or says why it cannot: a
/// line without a member, an item not in the catalogue, a unit price other than the
/// item's money part.
pub fn price(lines: &[Line], set: Option<&RuleSet>, member: bool) -> Result<Part, String> {
    let mut part = Part::default();
    if lines.is_empty() {
        return Ok(part);
    }
    if !member {
        return Err("catalogue lines are paid with a member's points: name the member".into());
    }
    for l in lines {
        let item = set
            .and_then(|s| s.catalogue_item(&l.sku))
            .ok_or_else(|| format!("{} is not in the points catalogue", l.sku))?;
        if l.unit_price != item.cash {
            return Err(format!(
                "{}: the catalogue's money part is {} fen a unit, not {}",
                l.sku, item.cash, l.unit_price
            ));
        }
        // Bounded by validate_lines (qty, price) and the catalogue (points): no overflow.
        part.cash += l.qty * item.cash;
        part.points += l.qty * item.points;
    }
    part.units = units(lines);
    Ok(part)
}

/// Units per SKU of the catalogue lines among `lines`, in first-seen order: what a
/// sale takes from the store's stock (also counted again from a sale's fact when a
/// restored store gets its own sales back from the hub).
pub fn units(lines: &[Line]) -> Vec<(String, i64)> {
    let mut units: Vec<(String, i64)> = Vec::new();
    for l in lines.iter().filter(|l| l.catalogue) {
        match units.iter_mut().find(|(s, _)| *s == l.sku) {
            Some((_, n)) => *n = n.saturating_add(l.qty),
            None => units.push((l.sku.clone(), l.qty)),
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, qty: i64, unit_price: i64, catalogue: bool) -> Line {
        Line {
            sku: sku.into(),
            category: None,
            qty,
            unit_price,
            catalogue,
        }
    }

    fn set() -> RuleSet {
        serde_json::from_str(
            r#"{"version":"c1","catalogue":[
                {"sku":"UMB","label":"雨伞","points":500,"cash":990,"stock_per_store":3},
                {"sku":"MUG","label":"杯子","points":300}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn catalogue_lines_cost_points_and_their_money_part_per_unit() {
        let s = set();
        let (goods, cat) = split(vec![
            line("A", 1, 1_000, false),
            line("UMB", 2, 990, true),
            line("MUG", 1, 0, true),
            line("UMB", 1, 990, true),
        ]);
        assert_eq!(goods.len(), 1);
        let p = price(&cat, Some(&s), true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.cash, p.points), (3 * 990, 3 * 500 + 300));
        assert_eq!(p.units, [("UMB".to_string(), 3), ("MUG".to_string(), 1)]);
    }

    #[test]
    fn walk_ins_unknown_items_and_wrong_prices_are_refused() {
        let s = set();
        assert!(price(&[line("UMB", 1, 990, true)], Some(&s), false).is_err());
        assert!(price(&[line("HAT", 1, 0, true)], Some(&s), true).is_err());
        assert!(price(&[line("UMB", 1, 0, true)], Some(&s), true).is_err());
        assert!(price(&[line("UMB", 1, 990, true)], None, true).is_err());
        assert_eq!(price(&[], None, false), Ok(Part::default()));
    }
}

//! The pricing engine: a pure function of (basket, the member's derived state, the rule
//! set, usage so far, time).
//!
//! Evaluation order (documented in `docs/rules.md`):
//! 1. **item discounts**, 2. **bundles**, 3. **order reductions** — within a stage, rules
//!    in priority order (higher first, then id); each works on what earlier rules left.
//!    Rules sharing a `group` exclude each other: the first that applies takes the group.
//! 4. **coupons** the POS sent, in code order;
//! 5. **points redemption**, in whole redemption steps, never more than is due;
//! 6. **earning**: ⌊total × rate⌋, plus multiplier bonuses on the lines they target;
//! 7. **coupon grants** on the amount after discounts (points are a payment, not a
//!    discount, so they do not lower it).
//!
//! No discount exceeds what it applies to, so no total goes negative. Lines are
//! evaluated in a canonical order (SKU, category, price, quantity), so the order in
//! which the POS lists them changes nothing.

use std::collections::HashMap;

use patron_protocol::money::mul_div_floor;
use patron_protocol::pos::Discount;
use patron_protocol::{Fen, Points};

use super::alloc::split;
use super::ruleset::{Audience, Compiled, CouponTemplate, Rule, RuleKind};
use crate::domain::clock::{Millis, days};
use crate::domain::pricing::{Line, redemption_step, subtotal};
use crate::domain::tiers::Tier;
use crate::domain::validate;
use patron_domain::settings::PointsRules;

/// What the engine needs to know about the member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCtx {
    /// Tier before this sale.
    pub tier: Tier,
    /// Preference and segment tags.
    pub tags: Vec<String>,
    /// Registration time.
    pub registered_at: Millis,
    /// Whether the member bought anything before.
    pub has_purchased: bool,
    /// Whether today is in the member's birthday month (None: unknown).
    pub birthday_month: bool,
    /// Sign-up channel.
    pub channel: Option<String>,
    /// Available points.
    pub balance: i64,
}

/// A coupon the POS presented, already checked to be the member's, active, unexpired
/// and unused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponIn {
    /// Coupon id.
    pub id: [u8; 16],
    /// Its code.
    pub code: String,
    /// Display label.
    pub label: String,
    /// Value in fen.
    pub off: i64,
    /// Smallest amount due it applies to.
    pub min_spend: i64,
}

/// How much each limited rule was used before this sale.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sales of this member in which the rule applied.
    pub member_uses: HashMap<String, u32>,
    /// Discount given and times applied, at this store.
    pub budget: HashMap<String, (i64, u32)>,
}

/// Everything one pricing needs.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// Validated lines.
    pub lines: &'a [Line],
    /// The member, or None for a walk-in.
    pub member: Option<&'a MemberCtx>,
    /// Points the customer pays with.
    pub redeem_points: i64,
    /// Coupons presented.
    pub coupons: &'a [CouponIn],
    /// The rule set in force, if any.
    pub rules: Option<&'a Compiled>,
    /// Usage of limited rules.
    pub usage: &'a Usage,
    /// Pricing time.
    pub now: Millis,
    /// This store.
    pub store_id: &'a str,
    /// Earning and redemption rates.
    pub points: &'a PointsRules,
    /// Whether to write the human-readable trace: quotes show it; a commit skips the
    /// formatting (its sale can be re-priced to explain it later).
    pub explain: bool,
}

/// Why a basket cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// A malformed basket.
    #[error("{0}")]
    Invalid(String),
    /// More points than the member has.
    #[error("the member has {available} points; {requested} were asked for")]
    InsufficientPoints {
        /// Available balance.
        available: i64,
        /// Points asked for.
        requested: i64,
    },
    /// The points asked for are worth more than the amount due.
    #[error(
        "redeem_points is worth more than the amount due; at most {max_points} points may be redeemed"
    )]
    RedeemExceedsDue {
        /// The most points this basket can take.
        max_points: i64,
    },
    /// A coupon does not apply to this basket.
    #[error("coupon {code}: {reason}")]
    Coupon {
        /// The coupon code.
        code: String,
        /// Why.
        reason: String,
    },
}

/// A rule that applied, for usage accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Rule id.
    pub rule_id: String,
    /// Discount it gave, in fen (0 for multipliers and grants).
    pub amount: i64,
}

/// A coupon this sale issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The granting rule.
    pub rule_id: String,
    /// What to issue.
    pub template: CouponTemplate,
}

/// A priced basket.
#[derive(Debug, Clone, PartialEq)]
pub struct Priced {
    /// Σ qty × unit_price.
    pub subtotal: i64,
    /// Applied discounts, in order.
    pub discounts: Vec<Discount>,
    /// Points used to pay.
    pub points_redeemed: i64,
    /// Their value in fen.
    pub points_value: i64,
    /// Points the catalogue lines take (`crate::domain::catalogue`; 0 from the engine).
    pub catalogue_points: i64,
    /// Money to pay.
    pub total: i64,
    /// Points this sale earns (base plus bonuses).
    pub points_to_earn: i64,
    /// Coupons to issue.
    pub grants: Vec<Grant>,
    /// Coupons consumed.
    pub coupons_used: Vec<[u8; 16]>,
    /// Rules that applied.
    pub applied: Vec<Applied>,
    /// Flags such as `free_shipping`.
    pub flags: Vec<String>,
    /// The rule-set version used, if any.
    pub rules_version: Option<String>,
    /// Human-readable trace (empty unless the input asked for it).
    pub explain: Vec<String>,
}

/// The trace being written, or nothing when the caller does not want it.
struct Explain(Option<Vec<String>>);

impl Explain {
    fn add(&mut self, line: impl FnOnce() -> String) {
        if let Some(v) = &mut self.0 {
            v.push(line());
        }
    }
}

fn yuan(f: i64) -> String {
    Fen(f).display_yuan()
}

fn matches(line: &Line, skus: &[String], categories: &[String]) -> bool {
    (skus.is_empty() && categories.is_empty())
        || skus.contains(&line.sku)
        || line
            .category
            .as_ref()
            .is_some_and(|c| categories.iter().any(|x| x == c))
}

fn in_categories(line: &Line, categories: &[String]) -> bool {
    matches(line, &[], categories)
}

/// Why a rule does not apply to this customer now, if it does not.
fn audience_refusal(
    a: &Audience,
    m: Option<&MemberCtx>,
    store: &str,
    now: Millis,
) -> Option<&'static str> {
    if !a.stores.is_empty() && !a.stores.iter().any(|s| s == store) {
        return Some("not at this store");
    }
    if !a.needs_member() {
        return None;
    }
    let Some(m) = m else {
        return Some("members only");
    };
    if !a.tiers.is_empty() && !a.tiers.iter().any(|t| t == m.tier.code()) {
        return Some("not for this tier");
    }
    if !a.tags_any.is_empty() && !a.tags_any.iter().any(|t| m.tags.contains(t)) {
        return Some("not in the target segment");
    }
    if let Some(d) = a.new_member_days
        && now - m.registered_at > days(d)
    {
        return Some("not a new member");
    }
    if a.first_purchase && m.has_purchased {
        return Some("not a first purchase");
    }
    if a.birthday_month && !m.birthday_month {
        return Some("not the birthday month");
    }
    if !a.channels.is_empty()
        && !m
            .channel
            .as_ref()
            .is_some_and(|c| a.channels.iter().any(|p| c.starts_with(p.as_str())))
    {
        return Some("not from the target channel");
    }
    None
}

fn limit_refusal(r: &Rule, usage: &Usage, member: bool) -> Option<&'static str> {
    if let Some(n) = r.limits.per_member
        && member
        && usage.member_uses.get(&r.id).copied().unwrap_or(0) >= n
    {
        return Some("member's usage limit reached");
    }
    if let Some(n) = r.limits.budget_count
        && usage.budget.get(&r.id).map_or(0, |b| b.1) >= n
    {
        return Some("budget exhausted");
    }
    None
}

fn budget_allows(r: &Rule, usage: &Usage, amount: i64) -> bool {
    match r.limits.budget_fen {
        None => true,
        Some(b) => {
            usage
                .budget
                .get(&r.id)
                .map_or(0, |u| u.0)
                .saturating_add(amount)
                <= b
        }
    }
}

fn stage(k: &RuleKind) -> u8 {
    match k {
        RuleKind::ItemDiscount(_) => 1,
        RuleKind::Bundle(_) => 2,
        RuleKind::OrderReduction(_) => 3,
        RuleKind::PointsMultiplier(_) => 4,
        RuleKind::CouponGrant(_) => 5,
    }
}

/// The per-line discount a discount-stage rule would give, given current line amounts.
fn rule_discount(
    kind: &RuleKind,
    lines: &[Line],
    amounts: &[i64],
    bundled: &mut [i64],
    free_amount: &mut [i64],
) -> Vec<i64> {
    match kind {
        RuleKind::ItemDiscount(d) => lines
            .iter()
            .zip(amounts)
            .map(|(l, a)| {
                if matches(l, &d.skus, &d.categories) {
                    mul_div_floor(*a, 1000 - d.pay_permille, 1000).unwrap_or(0)
                } else {
                    0
                }
            })
            .collect(),
        RuleKind::Bundle(b) => {
            // Units needed per SKU for one set.
            let mut need: Vec<(&str, i64)> = Vec::new();
            for s in &b.skus {
                match need.iter_mut().find(|(k, _)| *k == s.as_str()) {
                    Some((_, n)) => *n += 1,
                    None => need.push((s.as_str(), 1)),
                }
            }
            let free_units = |sku: &str| -> i64 {
                lines
                    .iter()
                    .zip(bundled.iter())
                    .filter(|(l, _)| l.sku == sku)
                    .map(|(l, u)| l.qty - u)
                    .sum()
            };
            let sets = need
                .iter()
                .map(|(s, n)| free_units(s) / n)
                .min()
                .unwrap_or(0);
            if sets == 0 {
                return vec![0; lines.len()];
            }
            // Take the units line by line, valuing them at their share of the line's
            // not-yet-bundled amount.
            let mut taken_value = vec![0i64; lines.len()];
            let mut new_bundled = bundled.to_vec();
            let mut new_free = free_amount.to_vec();
            for (sku, n) in &need {
                let mut want = n * sets;
                for (i, l) in lines.iter().enumerate() {
                    if want == 0 {
                        break;
                    }
                    if l.sku != *sku {
                        continue;
                    }
                    let free = l.qty - new_bundled[i];
                    let t = want.min(free);
                    if t == 0 {
                        continue;
                    }
                    let v = mul_div_floor(new_free[i], t, free).unwrap_or(0);
                    taken_value[i] += v;
                    new_free[i] -= v;
                    new_bundled[i] += t;
                    want -= t;
                }
            }
            let value: i64 = taken_value.iter().sum();
            let Some(discount) = sets.checked_mul(b.price).map(|set_price| value - set_price)
            else {
                return vec![0; lines.len()];
            };
            if discount <= 0 {
                return vec![0; lines.len()];
            }
            bundled.copy_from_slice(&new_bundled);
            free_amount.copy_from_slice(&new_free);
            split(discount, &taken_value)
        }
        RuleKind::OrderReduction(o) => {
            let eligible: Vec<i64> = lines
                .iter()
                .zip(amounts)
                .map(|(l, a)| {
                    if in_categories(l, &o.categories) {
                        *a
                    } else {
                        0
                    }
                })
                .collect();
            let e: i64 = eligible.iter().sum();
            if e <= 0 || e < o.threshold {
                return vec![0; lines.len()];
            }
            let off = if o.repeat {
                let n = e / o.threshold.max(1);
                let raw = n.saturating_mul(o.off);
                o.cap.map_or(raw, |c| raw.min(c))
            } else {
                o.off
            };
            split(off.min(e), &eligible)
        }
        RuleKind::PointsMultiplier(_) | RuleKind::CouponGrant(_) => vec![0; lines.len()],
    }
}

/// Prices a basket.
pub fn price(input: &Input<'_>) -> Result<Priced, PricingError> {
    // Canonical line order: the POS's order must not change any figure.
    let mut lines: Vec<Line> = input.lines.to_vec();
    lines.sort_by(|a, b| {
        (&a.sku, &a.category, a.unit_price, a.qty).cmp(&(&b.sku, &b.category, b.unit_price, b.qty))
    });
    let subtotal = subtotal(&lines).map_err(PricingError::Invalid)?;
    let mut amounts: Vec<i64> = lines.iter().map(|l| l.qty * l.unit_price).collect();
    let mut explain = Explain(input.explain.then(Vec::new));
    explain.add(|| format!("subtotal {} over {} line(s)", yuan(subtotal), lines.len()));
    let mut discounts = Vec::new();
    let mut applied = Vec::new();
    let member = input.member;

    // Rules that may apply to this customer now, in evaluation order.
    let mut rules: Vec<(usize, &Rule)> = Vec::new();
    if let Some(c) = input.rules {
        explain.add(|| format!("rule set {}", c.set.version));
        for (i, r) in c.set.rules.iter().enumerate() {
            let refusal = match c.windows[i] {
                Some((from, to)) if input.now < from || input.now >= to => {
                    Some("outside its time window")
                }
                _ => audience_refusal(&r.audience, member, input.store_id, input.now),
            }
            .or_else(|| limit_refusal(r, input.usage, member.is_some()));
            match refusal {
                None => rules.push((i, r)),
                Some(why) => explain.add(|| format!("{} ({}): {why}", r.label, r.id)),
            }
        }
        rules.sort_by(|(_, a), (_, b)| {
            stage(&a.kind)
                .cmp(&stage(&b.kind))
                .then(b.priority.cmp(&a.priority))
                .then(a.id.cmp(&b.id))
        });
    }

    // Stages 1–3: item discounts, bundles, order reductions.
    let mut groups: HashMap<&str, &str> = HashMap::new();
    // Item discounts exclude each other per line: a line takes at most one item rule of
    // a group (member price or sale price, never both), other lines stay open to it.
    let mut line_groups: Vec<Vec<&str>> = vec![Vec::new(); lines.len()];
    let mut bundled = vec![0i64; lines.len()];
    let mut free_amount = amounts.clone();
    for (_, r) in rules.iter().filter(|(_, r)| stage(&r.kind) <= 3) {
        let item = matches!(r.kind, RuleKind::ItemDiscount(_));
        if !item
            && let Some(g) = r.group.as_deref()
            && let Some(holder) = groups.get(g)
        {
            explain.add(|| {
                format!(
                    "{} ({}): group {g} already taken by {holder}",
                    r.label, r.id
                )
            });
            continue;
        }
        let (mut b2, mut f2) = (bundled.clone(), free_amount.clone());
        let mut per_line = rule_discount(&r.kind, &lines, &amounts, &mut b2, &mut f2);
        if item && let Some(g) = r.group.as_deref() {
            for (d, taken) in per_line.iter_mut().zip(&line_groups) {
                if taken.contains(&g) {
                    *d = 0;
                }
            }
        }
        let total: i64 = per_line.iter().sum();
        if total <= 0 {
            let why = if item && r.group.is_some() {
                "conditions not met, or its group already applied on every line it targets"
            } else {
                "conditions not met"
            };
            explain.add(|| format!("{} ({}): {why}", r.label, r.id));
            continue;
        }
        if !budget_allows(r, input.usage, total) {
            explain.add(|| format!("{} ({}): budget exhausted", r.label, r.id));
            continue;
        }
        for ((a, d), f) in amounts
            .iter_mut()
            .zip(&per_line)
            .zip(free_amount.iter_mut())
        {
            *a -= d;
            // Item-level cuts also lower what bundles later value the units at.
            if matches!(r.kind, RuleKind::ItemDiscount(_)) {
                *f -= d;
            }
        }
        if matches!(r.kind, RuleKind::Bundle(_)) {
            bundled = b2;
            free_amount = f2;
        }
        if let Some(g) = r.group.as_deref() {
            groups.entry(g).or_insert(r.id.as_str());
            if item {
                for (d, taken) in per_line.iter().zip(line_groups.iter_mut()) {
                    if *d > 0 {
                        taken.push(g);
                    }
                }
            }
        }
        explain.add(|| format!("{} ({}): -{}", r.label, r.id, yuan(total)));
        discounts.push(Discount {
            source: r.source.clone().unwrap_or_else(|| "campaign".into()),
            id: r.id.clone(),
            label: r.label.clone(),
            amount: Fen(total),
        });
        applied.push(Applied {
            rule_id: r.id.clone(),
            amount: total,
        });
    }

    // Stage 4: coupons.
    let mut coupons: Vec<&CouponIn> = input.coupons.iter().collect();
    coupons.sort_by(|a, b| a.code.cmp(&b.code));
    let mut coupons_used = Vec::new();
    for c in coupons {
        let due: i64 = amounts.iter().sum();
        if due < c.min_spend {
            return Err(PricingError::Coupon {
                code: c.code.clone(),
                reason: format!(
                    "needs {} due; this basket has {}",
                    yuan(c.min_spend),
                    yuan(due)
                ),
            });
        }
        if due == 0 {
            return Err(PricingError::Coupon {
                code: c.code.clone(),
                reason: "nothing is left to discount".into(),
            });
        }
        let off = c.off.min(due);
        let cuts = split(off, &amounts);
        for (a, d) in amounts.iter_mut().zip(cuts) {
            *a -= d;
        }
        explain.add(|| format!("coupon {}: -{}", c.label, yuan(off)));
        discounts.push(Discount {
            source: "coupon".into(),
            id: c.code.clone(),
            label: c.label.clone(),
            amount: Fen(off),
        });
        coupons_used.push(c.id);
    }
    let due: i64 = amounts.iter().sum();

    // Stage 5: points redemption.
    let (step_points, step_value) = redemption_step(input.points);
    let mut points_value = 0;
    let redeem = input.redeem_points;
    if redeem != 0 {
        let Some(m) = member else {
            return Err(PricingError::Invalid(
                "redeem_points needs a member_id".into(),
            ));
        };
        if !(1..=validate::MAX_POINTS).contains(&redeem) {
            return Err(PricingError::Invalid(format!(
                "redeem_points must be between 0 and {}",
                validate::MAX_POINTS
            )));
        }
        if redeem % step_points != 0 {
            return Err(PricingError::Invalid(format!(
                "redeem_points must be a multiple of {step_points}"
            )));
        }
        points_value = redeem / step_points * step_value;
        if points_value > due {
            let max_points = if step_value == 0 {
                0
            } else {
                due / step_value * step_points
            };
            return Err(PricingError::RedeemExceedsDue { max_points });
        }
        if redeem > m.balance {
            return Err(PricingError::InsufficientPoints {
                available: m.balance,
                requested: redeem,
            });
        }
        explain.add(|| format!("redeemed {redeem} points = {}", yuan(points_value)));
    }
    let total = due - points_value;

    // Stage 6: earning.
    let rate = |amount: i64| {
        mul_div_floor(amount, input.points.earn_points, input.points.earn_per_fen).unwrap_or(0)
    };
    let mut points_to_earn = 0;
    if member.is_some() {
        points_to_earn = rate(total);
        explain.add(|| {
            format!(
                "earn {} point(s) per {} paid: {} earns {points_to_earn}",
                input.points.earn_points,
                yuan(input.points.earn_per_fen),
                yuan(total)
            )
        });
        // Each line takes the highest multiplier that targets it (within a group only the
        // first eligible multiplier competes); money paid is shared over lines in
        // proportion to their amounts after discounts. Only rules that set some line's
        // final multiplier count as applied (limits, groups).
        let mut candidates: Vec<(&Rule, i64, &[String])> = Vec::new();
        let mut competing: Vec<&str> = Vec::new();
        for (_, r) in rules.iter().filter(|(_, r)| stage(&r.kind) == 4) {
            let RuleKind::PointsMultiplier(pm) = &r.kind else {
                continue;
            };
            if let Some(g) = r.group.as_deref() {
                if groups.contains_key(g) || competing.contains(&g) {
                    continue;
                }
                competing.push(g);
            }
            candidates.push((r, pm.multiplier, &pm.categories));
        }
        let mut mult = vec![1i64; lines.len()];
        let mut setter: Vec<Option<usize>> = vec![None; lines.len()];
        for (k, (_, m, cats)) in candidates.iter().enumerate() {
            for ((lm, who), l) in mult.iter_mut().zip(setter.iter_mut()).zip(&lines) {
                if in_categories(l, cats) && *m > *lm {
                    *lm = *m;
                    *who = Some(k);
                }
            }
        }
        let mut multipliers: Vec<&Rule> = Vec::new();
        for (k, (r, _, _)) in candidates.iter().enumerate() {
            if setter.contains(&Some(k)) {
                if let Some(g) = r.group.as_deref() {
                    groups.insert(g, r.id.as_str());
                }
                multipliers.push(r);
            }
        }
        if !multipliers.is_empty() {
            let paid = split(total, &amounts);
            let mut by_mult: HashMap<i64, i64> = HashMap::new();
            for (m, p) in mult.iter().zip(&paid) {
                if *m > 1 {
                    *by_mult.entry(*m).or_insert(0) += p;
                }
            }
            let mut keys: Vec<&i64> = by_mult.keys().collect();
            keys.sort();
            let bonus: i64 = keys
                .iter()
                .map(|m| rate(by_mult[*m]).saturating_mul(**m - 1))
                .sum();
            points_to_earn += bonus;
            for r in multipliers {
                explain.add(|| format!("{} ({}): bonus points", r.label, r.id));
                applied.push(Applied {
                    rule_id: r.id.clone(),
                    amount: 0,
                });
            }
            explain.add(|| format!("multiplier bonus: {bonus} points"));
        }
    }

    // Stage 7: coupon grants on the amount after discounts.
    let mut grants = Vec::new();
    for (_, r) in rules.iter().filter(|(_, r)| stage(&r.kind) == 5) {
        let RuleKind::CouponGrant(g) = &r.kind else {
            continue;
        };
        if member.is_none() {
            explain.add(|| format!("{} ({}): members only", r.label, r.id));
            continue;
        }
        if let Some(grp) = r.group.as_deref()
            && let Some(holder) = groups.get(grp)
        {
            explain.add(|| {
                format!(
                    "{} ({}): group {grp} already taken by {holder}",
                    r.label, r.id
                )
            });
            continue;
        }
        let eligible: i64 = lines
            .iter()
            .zip(&amounts)
            .filter(|(l, _)| in_categories(l, &g.categories))
            .map(|(_, a)| a)
            .sum();
        if eligible >= g.threshold && eligible > 0 {
            if let Some(grp) = r.group.as_deref() {
                groups.insert(grp, r.id.as_str());
            }
            explain.add(|| format!("{} ({}): issues {}", r.label, r.id, g.coupon.label));
            grants.push(Grant {
                rule_id: r.id.clone(),
                template: g.coupon.clone(),
            });
            applied.push(Applied {
                rule_id: r.id.clone(),
                amount: 0,
            });
        } else {
            explain.add(|| {
                format!(
                    "{} ({}): needs {} eligible",
                    r.label,
                    r.id,
                    yuan(g.threshold)
                )
            });
        }
    }

    // Tier flags.
    let mut flags = Vec::new();
    if let (Some(m), Some(c)) = (member, input.rules)
        && let Some(over) = c.perks(m.tier.code()).and_then(|p| p.free_shipping_over)
        && total >= over
    {
        flags.push("free_shipping".to_string());
        explain.add(|| format!("{} tier: free shipping over {}", m.tier.name(), yuan(over)));
    }

    Ok(Priced {
        subtotal,
        discounts,
        points_redeemed: redeem,
        points_value,
        catalogue_points: 0,
        total,
        points_to_earn,
        grants,
        coupons_used,
        applied,
        flags,
        rules_version: input.rules.map(|c| c.set.version.clone()),
        explain: explain.0.unwrap_or_default(),
    })
}

impl Priced {
    /// The sale with its catalogue lines: their money joins the subtotal and the
    /// total, their points are taken besides those that pay.
    pub fn with_catalogue(self, part: &crate::domain::catalogue::Part) -> Priced {
        Priced {
            subtotal: self.subtotal + part.cash,
            total: self.total + part.cash,
            catalogue_points: part.points,
            ..self
        }
    }

    /// Every point the sale takes from the member: those that pay and the catalogue's.
    pub fn points_spent(&self) -> i64 {
        self.points_redeemed + self.catalogue_points
    }

    /// The quote as the POS sees it.
    pub fn to_quote(&self) -> patron_protocol::pos::Quote {
        patron_protocol::pos::Quote {
            subtotal: Fen(self.subtotal),
            discounts: self.discounts.clone(),
            points_redeemed: Points(self.points_redeemed),
            points_value: Fen(self.points_value),
            catalogue_points: Points(self.catalogue_points),
            total: Fen(self.total),
            points_to_earn: Points(self.points_to_earn),
            coupons_to_issue: self
                .grants
                .iter()
                .map(|g| patron_protocol::pos::IssuedCoupon {
                    coupon_id: String::new(),
                    label: g.template.label.clone(),
                    amount: Fen(g.template.off),
                })
                .collect(),
            explain: self.explain.clone(),
            flags: self.flags.clone(),
            rules_version: self.rules_version.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::promo::ruleset::RuleSet;
    use proptest::prelude::*;

    fn line(sku: &str, category: Option<&str>, qty: i64, unit_price: i64) -> Line {
        Line {
            sku: sku.into(),
            category: category.map(String::from),
            qty,
            unit_price,
            catalogue: false,
        }
    }

    fn member(tier: Tier, balance: i64) -> MemberCtx {
        MemberCtx {
            tier,
            tags: vec![],
            registered_at: 0,
            has_purchased: true,
            birthday_month: false,
            channel: None,
            balance,
        }
    }

    fn run(
        lines: &[Line],
        m: Option<&MemberCtx>,
        redeem: i64,
        rules: Option<&Compiled>,
        coupons: &[CouponIn],
    ) -> Result<Priced, PricingError> {
        run_at_rate(&PointsRules::default(), lines, m, redeem, rules, coupons)
    }

    /// [`run`] under the points settings `cfg`.
    fn run_at_rate(
        cfg: &PointsRules,
        lines: &[Line],
        m: Option<&MemberCtx>,
        redeem: i64,
        rules: Option<&Compiled>,
        coupons: &[CouponIn],
    ) -> Result<Priced, PricingError> {
        let usage = Usage::default();
        price(&Input {
            lines,
            member: m,
            redeem_points: redeem,
            coupons,
            rules,
            usage: &usage,
            now: NOW,
            store_id: "S001",
            points: cfg,
            explain: true,
        })
    }

    /// 2026-11-25T12:00:00+08:00, inside the fixture's flash-sale window.
    const NOW: Millis = 1_795_579_200_000;

    fn examples() -> Compiled {
        RuleSet::parse(include_bytes!("../../../rules/examples.json"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn amounts(p: &Priced) -> Vec<(String, i64)> {
        p.discounts
            .iter()
            .map(|d| (d.id.clone(), d.amount.0))
            .collect()
    }

    #[test]
    fn earning_rounds_down_and_ignores_the_part_paid_with_points() {
        let m = member(Tier::Normal, 1_000);
        let p = run(&[line("A1", None, 1, 19_999)], Some(&m), 0, None, &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.total, p.points_to_earn), (19_999, 199));
        let p = run(&[line("A1", None, 2, 9_900)], Some(&m), 500, None, &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.subtotal, p.points_value, p.total, p.points_to_earn),
            (19_800, 500, 19_300, 193)
        );
    }

    #[test]
    fn walk_ins_earn_nothing_and_cannot_redeem() {
        let p =
            run(&[line("A1", None, 1, 500)], None, 0, None, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.points_to_earn, 0);
        assert!(matches!(
            run(&[line("A1", None, 1, 500)], None, 10, None, &[]),
            Err(PricingError::Invalid(_))
        ));
    }

    #[test]
    fn redemption_is_bounded_by_balance_and_amount_due() {
        let m = member(Tier::Normal, 100);
        assert_eq!(
            run(&[line("A1", None, 1, 500)], Some(&m), 200, None, &[]),
            Err(PricingError::InsufficientPoints {
                available: 100,
                requested: 200
            })
        );
        let rich = member(Tier::Normal, 10_000);
        assert_eq!(
            run(&[line("A1", None, 1, 500)], Some(&rich), 600, None, &[]),
            Err(PricingError::RedeemExceedsDue { max_points: 500 })
        );
    }

    #[test]
    fn an_empty_rule_set_and_no_rule_set_price_alike() {
        let m = member(Tier::Silver, 0);
        let empty = RuleSet::parse(br#"{"version":"empty"}"#).unwrap_or_else(|e| panic!("{e}"));
        let ls = [line("A1", Some("skincare"), 2, 15_000)];
        let a = run(&ls, Some(&m), 0, None, &[]).unwrap_or_else(|e| panic!("{e}"));
        let b = run(&ls, Some(&m), 0, Some(&empty), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (a.total, a.points_to_earn, a.discounts.len()),
            (b.total, b.points_to_earn, 0)
        );
    }

    #[test]
    fn full_reduction_200_minus_30() {
        let rules = examples();
        let m = member(Tier::Normal, 0);
        let p = run(
            &[line("X", None, 1, 19_999)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.discounts.is_empty(), "¥199.99 is below ¥200");
        let p = run(
            &[line("X", None, 2, 10_000)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(amounts(&p), vec![("full-200-30".into(), 3_000)]);
        assert_eq!((p.total, p.points_to_earn), (17_000, 170));
        assert!(p.explain.iter().any(|e| e.contains("满200减30")));
    }

    #[test]
    fn repeating_reduction_is_capped() {
        let rules = RuleSet::parse(
            br#"{"version":"r","rules":[{"id":"every-200","label":"every 200 minus 30","type":"order_reduction","threshold":20000,"off":3000,"repeat":true,"cap":6000}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let m = member(Tier::Normal, 0);
        let p = run(
            &[line("X", None, 1, 45_000)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.total, 45_000 - 6_000, "two full ¥200 → ¥60");
        let p = run(
            &[line("X", None, 1, 90_000)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.total,
            90_000 - 6_000,
            "four full ¥200 would be ¥120; capped at ¥60"
        );
    }

    #[test]
    fn spend_300_gets_a_50_coupon() {
        let rules = examples();
        let m = member(Tier::Normal, 0);
        let p = run(
            &[line("X", None, 1, 35_000)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // ¥350 − ¥30 (满200减30) = ¥320 ≥ ¥300: one ¥50 coupon.
        assert_eq!(p.grants.len(), 1);
        assert_eq!(p.grants[0].template.off, 5_000);
        let p = run(
            &[line("X", None, 1, 32_000)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            p.grants.is_empty(),
            "¥320 − ¥30 = ¥290 < ¥300 after discounts"
        );
    }

    #[test]
    fn flash_sale_80_percent_in_its_window_only() {
        let rules = examples();
        let m = member(Tier::Normal, 0);
        let ls = [
            line("S1", Some("skincare"), 1, 10_000),
            line("F1", Some("food"), 1, 5_000),
        ];
        let p = run(&ls, Some(&m), 0, Some(&rules), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(amounts(&p), vec![("flash-skincare-80".into(), 2_000)]);
        let cfg = PointsRules::default();
        let usage = Usage::default();
        let before = price(&Input {
            lines: &ls,
            member: Some(&m),
            redeem_points: 0,
            coupons: &[],
            rules: Some(&rules),
            usage: &usage,
            now: 1_700_000_000_000,
            store_id: "S001",
            points: &cfg,
            explain: true,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(before.discounts.is_empty(), "before the window opens");
    }

    #[test]
    fn bundle_a_plus_b_for_199() {
        let rules = examples();
        let m = member(Tier::Normal, 0);
        let ls = [line("A", None, 3, 12_000), line("B", None, 2, 11_000)];
        let p = run(&ls, Some(&m), 0, Some(&rules), &[]).unwrap_or_else(|e| panic!("{e}"));
        // Two sets: 2 × (120 + 110) = 460 → 2 × 199 = 398: 62 off; the third A is full price.
        // Subtotal 580 − 62 = 518 ≥ 200 → 满200减30 too.
        assert_eq!(
            amounts(&p),
            vec![("bundle-a-b".into(), 6_200), ("full-200-30".into(), 3_000)]
        );
        assert_eq!(p.total, 58_000 - 6_200 - 3_000);
        let cheap = [line("A", None, 1, 5_000), line("B", None, 1, 5_000)];
        let p = run(&cheap, Some(&m), 0, Some(&rules), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.discounts.is_empty(), "a bundle never raises the price");
    }

    #[test]
    fn birthday_month_doubles_points() {
        let rules = examples();
        let mut m = member(Tier::Normal, 0);
        m.birthday_month = true;
        let p = run(
            &[line("X", None, 1, 15_000)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.points_to_earn, 300, "150 base + 150 bonus");
        m.birthday_month = false;
        let p = run(
            &[line("X", None, 1, 15_000)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.points_to_earn, 150);
    }

    #[test]
    fn first_order_10_off_only_before_any_purchase() {
        let rules = examples();
        let mut m = member(Tier::Normal, 0);
        m.has_purchased = false;
        let p = run(&[line("X", None, 1, 5_000)], Some(&m), 0, Some(&rules), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(amounts(&p), vec![("first-order-10".into(), 1_000)]);
        m.has_purchased = true;
        let p = run(&[line("X", None, 1, 5_000)], Some(&m), 0, Some(&rules), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.discounts.is_empty());
        let p = run(&[line("X", None, 1, 5_000)], None, 0, Some(&rules), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.discounts.is_empty(), "walk-ins are not new members");
    }

    #[test]
    fn silver_95_is_exclusive_with_the_flash_sale() {
        let rules = examples();
        let m = member(Tier::Silver, 0);
        let p = run(
            &[line("F", Some("food"), 1, 10_000)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(amounts(&p), vec![("silver-95".into(), 500)]);
        assert_eq!(p.discounts[0].source, "tier");
        // Skincare is on flash sale (priority 20, same group): the flash sale wins, the
        // silver discount does not stack on top.
        let p = run(
            &[line("S", Some("skincare"), 1, 10_000)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(amounts(&p), vec![("flash-skincare-80".into(), 2_000)]);
        assert!(
            p.explain
                .iter()
                .any(|e| e.contains("silver-95") && e.contains("group already applied"))
        );
    }

    #[test]
    fn coupons_apply_after_reductions_and_check_min_spend() {
        let rules = examples();
        let m = member(Tier::Normal, 0);
        let c = CouponIn {
            id: [7; 16],
            code: "C1".into(),
            label: "¥50 off".into(),
            off: 5_000,
            min_spend: 10_000,
        };
        let p = run(
            &[line("X", None, 1, 25_000)],
            Some(&m),
            0,
            Some(&rules),
            std::slice::from_ref(&c),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            amounts(&p),
            vec![("full-200-30".into(), 3_000), ("C1".into(), 5_000)]
        );
        assert_eq!(p.coupons_used, vec![[7; 16]]);
        let r = run(
            &[line("X", None, 1, 9_000)],
            Some(&m),
            0,
            Some(&rules),
            &[c],
        );
        assert!(matches!(r, Err(PricingError::Coupon { .. })));
    }

    #[test]
    fn limits_and_budgets_stop_a_rule() {
        let rules = examples();
        let mut m = member(Tier::Normal, 0);
        m.has_purchased = false;
        let cfg = PointsRules::default();
        let mut usage = Usage::default();
        usage.member_uses.insert("first-order-10".into(), 1);
        let ls = [line("X", None, 1, 5_000)];
        let p = price(&Input {
            lines: &ls,
            member: Some(&m),
            redeem_points: 0,
            coupons: &[],
            rules: Some(&rules),
            usage: &usage,
            now: NOW,
            store_id: "S001",
            points: &cfg,
            explain: true,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.discounts.is_empty(), "per-member limit of 1 reached");
        let budgeted = RuleSet::parse(
            br#"{"version":"b","rules":[{"id":"r","label":"x","type":"order_reduction","threshold":0,"off":1000,"limits":{"budget_fen":2500}}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut usage = Usage::default();
        usage.budget.insert("r".into(), (2_000, 2));
        let p = price(&Input {
            lines: &ls,
            member: Some(&m),
            redeem_points: 0,
            coupons: &[],
            rules: Some(&budgeted),
            usage: &usage,
            now: NOW,
            store_id: "S001",
            points: &cfg,
            explain: true,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            p.discounts.is_empty(),
            "2000 used + 1000 would pass the 2500 budget"
        );
    }

    #[test]
    fn item_groups_exclude_per_line_not_per_basket() {
        let rules = examples();
        let m = member(Tier::Silver, 0);
        let ls = [
            line("S", Some("skincare"), 1, 10_000),
            line("F", Some("food"), 1, 10_000),
        ];
        let p = run(&ls, Some(&m), 0, Some(&rules), &[]).unwrap_or_else(|e| panic!("{e}"));
        // Skincare takes the flash sale, food still gets the silver price.
        assert_eq!(
            amounts(&p),
            vec![
                ("flash-skincare-80".into(), 2_000),
                ("silver-95".into(), 500)
            ]
        );
    }

    #[test]
    fn an_overridden_multiplier_is_not_counted_and_grants_respect_groups() {
        let rules = RuleSet::parse(
            br#"{"version":"m","rules":[
              {"id":"m2","label":"x2","type":"points_multiplier","multiplier":2,"priority":10,"limits":{"per_member":1}},
              {"id":"m3","label":"x3","type":"points_multiplier","multiplier":3,"categories":["skincare"]},
              {"id":"off","label":"off","type":"order_reduction","threshold":20000,"off":3000,"group":"order"},
              {"id":"gift","label":"gift","type":"coupon_grant","threshold":30000,"group":"order",
               "coupon":{"label":"c","off":5000,"valid_days":30}}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let m = member(Tier::Normal, 0);
        let p = run(
            &[line("S", Some("skincare"), 1, 35_000)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let applied: Vec<&str> = p.applied.iter().map(|a| a.rule_id.as_str()).collect();
        assert_eq!(
            applied,
            vec!["off", "m3"],
            "m2 set no line's final multiplier; the grant's group was taken"
        );
        assert!(p.grants.is_empty());
        assert_eq!(p.points_to_earn, 320 * 3);
    }

    #[test]
    fn extreme_configured_values_do_not_overflow() {
        let rules = RuleSet::parse(
            br#"{"version":"x","rules":[{"id":"b","label":"b","type":"bundle","skus":["A","B"],"price":90000000000,"priority":-2147483648}]}"#,
        );
        assert!(
            rules.is_err(),
            "a bundle price beyond the subtotal cap is refused"
        );
        let rules = RuleSet::parse(
            br#"{"version":"x","rules":[{"id":"b","label":"b","type":"bundle","skus":["A","B"],"price":100,"priority":-2147483648},
                                        {"id":"c","label":"c","type":"bundle","skus":["A","B"],"price":50,"priority":2147483647}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let m = member(Tier::Normal, 0);
        let p = run(
            &[line("A", None, 1, 1_000), line("B", None, 1, 1_000)],
            Some(&m),
            0,
            Some(&rules),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.discounts[0].id, "c", "the highest priority goes first");
        assert!(p.total >= 0);
    }

    #[test]
    fn a_coupon_is_not_spent_on_nothing() {
        let m = member(Tier::Normal, 0);
        let c = CouponIn {
            id: [7; 16],
            code: "C1".into(),
            label: "c".into(),
            off: 500,
            min_spend: 0,
        };
        let r = run(&[line("FREE", None, 1, 0)], Some(&m), 0, None, &[c]);
        assert!(matches!(r, Err(PricingError::Coupon { .. })));
    }

    fn arb_lines() -> impl Strategy<Value = Vec<Line>> {
        let sku = prop_oneof![Just("A"), Just("B"), Just("X"), Just("S")];
        let cat = prop_oneof![Just(None), Just(Some("skincare")), Just(Some("food"))];
        proptest::collection::vec(
            (sku, cat, 1i64..6, 0i64..60_000).prop_map(|(s, c, q, p)| line(s, c, q, p)),
            1..20,
        )
    }

    fn arb_member() -> impl Strategy<Value = Option<MemberCtx>> {
        let tier = prop_oneof![
            Just(Tier::Normal),
            Just(Tier::Silver),
            Just(Tier::Gold),
            Just(Tier::Diamond)
        ];
        proptest::option::of(
            (tier, any::<bool>(), any::<bool>(), 0i64..200_000).prop_map(
                |(t, bday, bought, bal)| {
                    let mut m = member(t, bal);
                    m.birthday_month = bday;
                    m.has_purchased = bought;
                    m
                },
            ),
        )
    }

    proptest! {
        /// Baskets the engine must price (any lines, any member, nothing redeemed, no
        /// coupon) are priced, and their figures add up.
        #[test]
        fn valid_baskets_are_priced_and_their_figures_add_up(ls in arb_lines(), m in arb_member()) {
            let rules = examples();
            let p = run(&ls, m.as_ref(), 0, Some(&rules), &[]);
            prop_assert!(p.is_ok(), "{:?}", p);
            let p = p.unwrap_or_else(|e| panic!("{e}"));
            let disc: i64 = p.discounts.iter().map(|d| d.amount.0).sum();
            let subtotal: i64 = ls.iter().map(|l| l.qty * l.unit_price).sum();
            prop_assert_eq!(p.subtotal, subtotal);
            prop_assert!(p.total >= 0);
            prop_assert!(disc >= 0 && disc <= p.subtotal);
            prop_assert!(p.discounts.iter().all(|d| d.amount.0 > 0));
            prop_assert_eq!(p.subtotal - disc - p.points_value, p.total);
            prop_assert_eq!(p.points_value, 0);
            prop_assert!(p.points_to_earn >= 0);
        }

        /// Redeeming what both the amount due and the balance allow is priced at the
        /// redeem rate; a step more than the amount due, a point more than the balance,
        /// or points without a member are each refused with their own error.
        #[test]
        fn redemption_within_the_due_and_the_balance_is_priced_and_beyond_is_refused(
            ls in arb_lines(), m in arb_member(), pick in any::<u32>(), spare in 0i64..1_000,
            rate in prop_oneof![Just((100i64, 100i64)), Just((100, 50)), Just((3, 7)), Just((250, 100))],
        ) {
            let rules = examples();
            // Not only 1 point = 1 fen: a pricer that mixed up points and money, or
            // ignored the step, would pass at that rate.
            let cfg = PointsRules { redeem_points: rate.0, redeem_value_fen: rate.1, ..PointsRules::default() };
            let run = |ls: &[Line], m: Option<&MemberCtx>, redeem: i64, rules: Option<&Compiled>, c: &[CouponIn]| {
                run_at_rate(&cfg, ls, m, redeem, rules, c)
            };
            let (step_points, step_value) = crate::domain::pricing::redemption_step(&cfg);
            let Some(m) = m else {
                let r = run(&ls, None, step_points, Some(&rules), &[]);
                prop_assert!(matches!(r, Err(PricingError::Invalid(_))), "{:?}", r);
                return Ok(());
            };
            let rich = MemberCtx { balance: i64::MAX / 2, ..m.clone() };
            let before = run(&ls, Some(&rich), 0, Some(&rules), &[]).unwrap_or_else(|e| panic!("{e}"));
            let max_steps = (before.total / step_value).min(validate::MAX_POINTS / step_points);
            let steps = i64::from(pick) % (max_steps + 1);
            let redeem = steps * step_points;
            let member = MemberCtx { balance: redeem + spare, ..m.clone() };
            let p = run(&ls, Some(&member), redeem, Some(&rules), &[]);
            prop_assert!(p.is_ok(), "{} of at most {}: {:?}", redeem, max_steps * step_points, p);
            let p = p.unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(p.points_value, steps * step_value);
            prop_assert_eq!(p.total, before.total - steps * step_value);
            if redeem > 0 {
                let poor = MemberCtx { balance: redeem - 1, ..m.clone() };
                prop_assert_eq!(
                    run(&ls, Some(&poor), redeem, Some(&rules), &[]),
                    Err(PricingError::InsufficientPoints { available: redeem - 1, requested: redeem })
                );
            }
            if step_points > 1 {
                let r = run(&ls, Some(&rich), redeem + 1, Some(&rules), &[]);
                prop_assert!(matches!(r, Err(PricingError::Invalid(_))), "not a whole step: {:?}", r);
            }
            let over = (before.total / step_value + 1) * step_points;
            if over <= validate::MAX_POINTS {
                prop_assert_eq!(
                    run(&ls, Some(&rich), over, Some(&rules), &[]),
                    Err(PricingError::RedeemExceedsDue { max_points: before.total / step_value * step_points })
                );
            }
        }

        /// A coupon applies up to the amount due when the basket reaches its least
        /// spend, and is refused when it does not (or nothing is left to discount).
        #[test]
        fn a_coupon_applies_within_its_least_spend_and_is_refused_below_it(
            ls in arb_lines(), m in arb_member(), off in 1i64..100_000, below in any::<bool>()
        ) {
            let rules = examples();
            let m = m.unwrap_or_else(|| member(Tier::Normal, 0));
            let before = run(&ls, Some(&m), 0, Some(&rules), &[]).unwrap_or_else(|e| panic!("{e}"));
            let min_spend = if below { before.total + 1 } else { before.total };
            let c = CouponIn { id: [1; 16], code: "C".into(), label: "c".into(), off, min_spend };
            let r = run(&ls, Some(&m), 0, Some(&rules), &[c]);
            if below || before.total == 0 {
                prop_assert!(matches!(r, Err(PricingError::Coupon { .. })), "{:?}", r);
            } else {
                let p = r.unwrap_or_else(|e| panic!("{e}"));
                prop_assert_eq!(p.total, before.total - off.min(before.total));
                prop_assert!(p.discounts.iter().any(|d| d.source == "coupon" && d.amount.0 == off.min(before.total)));
            }
        }

        #[test]
        fn line_order_does_not_change_the_price(ls in arb_lines(), m in arb_member(), seed in any::<u64>()) {
            let rules = examples();
            let mut shuffled = ls.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let a = run(&ls, m.as_ref(), 0, Some(&rules), &[]);
            let b = run(&shuffled, m.as_ref(), 0, Some(&rules), &[]);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn same_input_same_output(ls in arb_lines(), m in arb_member()) {
            let rules = examples();
            prop_assert_eq!(run(&ls, m.as_ref(), 0, Some(&rules), &[]), run(&ls, m.as_ref(), 0, Some(&rules), &[]));
        }

        /// A commit skips the trace; nothing else may differ from the quote.
        #[test]
        fn the_trace_changes_no_figure(ls in arb_lines(), m in arb_member()) {
            let rules = examples();
            let (cfg, usage) = (PointsRules::default(), Usage::default());
            let input = |explain| Input {
                lines: &ls,
                member: m.as_ref(),
                redeem_points: 0,
                coupons: &[],
                rules: Some(&rules),
                usage: &usage,
                now: NOW,
                store_id: "S001",
                points: &cfg,
                explain,
            };
            let (with, without) = (price(&input(true)), price(&input(false)));
            if let (Ok(w), Ok(o)) = (&with, &without) {
                prop_assert!(!w.explain.is_empty());
                prop_assert!(o.explain.is_empty());
            }
            let strip = |p: Result<Priced, PricingError>| p.map(|p| Priced { explain: Vec::new(), ..p });
            prop_assert_eq!(strip(with), strip(without));
        }
    }
}

//! The rule-set format. A rule set is JSON authored at HQ, validated by the hub when it
//! is published and by the edge when it is loaded (one schema and one validation, here);
//! `docs/rules.md` documents every field.
//!
//! A rule set is identified by its `version`; a published version never changes: loading
//! the same version with other content is refused.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::points::Millis;

/// A whole rule set as authored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// Unique, immutable version id, e.g. `2026-11-v1`.
    pub version: String,
    /// Points earned by purchases become redeemable this many days after the sale
    /// (the return window); refunds inside it cancel them. 0 = at once.
    #[serde(default)]
    pub pending_points_days: u32,
    /// Referral rewards, if the chain runs them.
    #[serde(default)]
    pub referral: Option<ReferralRewards>,
    /// Welcome rewards for new members, each once per member across the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<Welcome>,
    /// Per-tier perks: benefits, quotas, upgrade gifts, flags.
    #[serde(default)]
    pub tiers: BTreeMap<String, TierPerks>,
    /// Promotion rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Goods a member takes for points, or points and cash (积分+现金兑换商品).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catalogue: Vec<CatalogueItem>,
}

/// Most items a catalogue holds.
pub const MAX_CATALOGUE: usize = 500;

/// Most points one unit of a catalogue item costs (a sale takes at most the hub's
/// limit for one fact in all).
pub const MAX_CATALOGUE_POINTS: i64 = 100_000;

/// An item of the points-for-goods catalogue: at the till it is a basket line marked
/// `catalogue`, paid with `points` per unit from the member's points and `cash` per
/// unit in money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueItem {
    /// The POS's stock-keeping unit.
    pub sku: String,
    /// What the member sees.
    pub label: String,
    /// Points per unit (1–100,000).
    pub points: i64,
    /// Money per unit, fen (0: points alone).
    #[serde(default)]
    pub cash: i64,
    /// Units each store may give in all (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock_per_store: Option<u32>,
    /// Units the whole chain may give in all, counted at the hub (absent: no limit;
    /// `crate::stock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock_chain: Option<u32>,
}

/// Points for referring a friend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferralRewards {
    /// To the referrer when the friend registers with their code.
    pub on_register: i64,
    /// To the referrer on the friend's first purchase.
    pub on_first_purchase: i64,
}

/// Welcome rewards (the guide's 注册送100积分 and 消费满50元送会员注册礼).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// Points given on registration.
    #[serde(default)]
    pub register_points: i64,
    /// A gift on the member's first purchase of at least a threshold.
    #[serde(default)]
    pub first_purchase: Option<WelcomeGift>,
}

/// The registration gift of a first purchase over a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WelcomeGift {
    /// Least amount paid (fen) of the purchase.
    pub threshold: i64,
    /// Points given.
    #[serde(default)]
    pub points: i64,
    /// A coupon given.
    #[serde(default)]
    pub coupon: Option<CouponTemplate>,
}

/// What a tier brings besides its discount rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierPerks {
    /// Benefits listed on the member, some with a monthly quota.
    #[serde(default)]
    pub benefits: Vec<BenefitDef>,
    /// A coupon given once when the member first reaches the tier.
    #[serde(default)]
    pub upgrade_coupon: Option<CouponTemplate>,
    /// Points given once when the member first reaches the tier.
    #[serde(default)]
    pub upgrade_points: i64,
    /// Free shipping when the amount paid reaches this (fen).
    #[serde(default)]
    pub free_shipping_over: Option<i64>,
}

/// A tier benefit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenefitDef {
    /// Code, e.g. `dry_cleaning`.
    pub code: String,
    /// Display label.
    pub label: String,
    /// Uses per calendar month; absent = a flag without a quota.
    #[serde(default)]
    pub quota_per_month: Option<u32>,
    /// What a store allows of the quota while it cannot ask the hub (absent: the
    /// store's default, `once`; docs/claims.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<crate::claims::OfflinePolicy>,
}

/// A coupon to issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponTemplate {
    /// Display label, e.g. `¥50 off`.
    pub label: String,
    /// Value in fen.
    pub off: i64,
    /// Smallest amount due (after discounts) it can be used on.
    #[serde(default)]
    pub min_spend: i64,
    /// Days it stays valid after issue (until the end of the last local day).
    pub valid_days: u32,
    /// Usable at once; otherwise the member claims it first.
    #[serde(default = "yes")]
    pub auto_active: bool,
    /// The stores it may be used at (store ids); empty: any store of the chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<String>,
}

fn yes() -> bool {
    true
}

/// One promotion rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Unique within the set: `[a-z0-9_:-]`, 1–64.
    pub id: String,
    /// Shown on the receipt and in `discounts`, e.g. `满200减30`.
    pub label: String,
    /// What the rule does.
    #[serde(flatten)]
    pub kind: RuleKind,
    /// Who it is for.
    #[serde(default)]
    pub audience: Audience,
    /// When it runs (RFC 3339, `from` inclusive, `to` exclusive); absent = always.
    #[serde(default)]
    pub window: Option<Window>,
    /// Higher first; decides within an exclusivity group and the order within a stage.
    #[serde(default)]
    pub priority: i32,
    /// Rules sharing a group exclude each other: only the first that applies counts.
    #[serde(default)]
    pub group: Option<String>,
    /// Usage limits.
    #[serde(default)]
    pub limits: Limits,
    /// `discounts[].source` for this rule: `campaign` (default) or `tier`.
    #[serde(default)]
    pub source: Option<String>,
}

/// The kinds of rule, by evaluation stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RuleKind {
    /// Stage 1: matching items cost `pay_permille`/1000 of their price (800 = 8折).
    ItemDiscount(ItemDiscount),
    /// Stage 2: a set of SKUs for a fixed price (A+B = ¥199).
    Bundle(Bundle),
    /// Stage 3: spend ≥ threshold, get `off` (or every threshold, up to a cap).
    OrderReduction(OrderReduction),
    /// After pricing: spend ≥ threshold, receive a coupon.
    CouponGrant(CouponGrant),
    /// Earning: matching items earn `multiplier` times the points.
    PointsMultiplier(PointsMultiplier),
}

/// See [`RuleKind::ItemDiscount`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemDiscount {
    /// Matching SKUs (empty with empty `categories` = every item).
    #[serde(default)]
    pub skus: Vec<String>,
    /// Matching categories.
    #[serde(default)]
    pub categories: Vec<String>,
    /// What is paid, in permille of the price: 800 = 80% = 8折, 950 = 9.5折.
    pub pay_permille: i64,
}

/// See [`RuleKind::Bundle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// One unit of each listed SKU makes a set (list a SKU twice for two units).
    pub skus: Vec<String>,
    /// The price of one set, in fen.
    pub price: i64,
}

/// See [`RuleKind::OrderReduction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderReduction {
    /// Eligible amount needed, in fen (0 = any amount).
    pub threshold: i64,
    /// Amount off, in fen.
    pub off: i64,
    /// `off` for every full `threshold` (needs threshold > 0).
    #[serde(default)]
    pub repeat: bool,
    /// Most taken off when repeating.
    #[serde(default)]
    pub cap: Option<i64>,
    /// Only these categories count towards and receive the reduction (empty = all).
    #[serde(default)]
    pub categories: Vec<String>,
}

/// See [`RuleKind::CouponGrant`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponGrant {
    /// Eligible amount (after discounts, before points) needed, in fen.
    pub threshold: i64,
    /// The coupon issued.
    pub coupon: CouponTemplate,
    /// Only these categories count (empty = all).
    #[serde(default)]
    pub categories: Vec<String>,
}

/// See [`RuleKind::PointsMultiplier`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsMultiplier {
    /// 2 = double points. Multipliers do not compound: a line takes the highest.
    pub multiplier: i64,
    /// Matching categories (empty = every item).
    #[serde(default)]
    pub categories: Vec<String>,
}

/// Who a rule is for. Every condition given must hold; a condition about the member
/// never holds for a walk-in customer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// Only members (any tier).
    #[serde(default)]
    pub members_only: bool,
    /// Member tier codes.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// The member holds at least one of these tags (segments arrive as tags).
    #[serde(default)]
    pub tags_any: Vec<String>,
    /// Registered within this many days.
    #[serde(default)]
    pub new_member_days: Option<u32>,
    /// The member has no earlier purchase.
    #[serde(default)]
    pub first_purchase: bool,
    /// It is the member's birthday month (store-local).
    #[serde(default)]
    pub birthday_month: bool,
    /// The member signed up through one of these channels (prefix match: `store:` matches `store:S001:staff`).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Only at these stores.
    #[serde(default)]
    pub stores: Vec<String>,
}

impl Audience {
    /// Whether any condition needs a member.
    pub fn needs_member(&self) -> bool {
        self.members_only
            || !self.tiers.is_empty()
            || !self.tags_any.is_empty()
            || self.new_member_days.is_some()
            || self.first_purchase
            || self.birthday_month
            || !self.channels.is_empty()
    }
}

/// A time window, RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start, inclusive.
    pub from: String,
    /// End, exclusive.
    pub to: String,
}

/// Usage limits. Budgets count at this store until the hub distributes shares of a
/// chain-wide budget.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Sales per member in which the rule may apply.
    #[serde(default)]
    pub per_member: Option<u32>,
    /// Total discount the rule may give, in fen; a sale whose discount would pass it
    /// does not get the rule.
    #[serde(default)]
    pub budget_fen: Option<i64>,
    /// Times the rule may apply (for coupon grants: coupons issued).
    #[serde(default)]
    pub budget_count: Option<u32>,
    /// What a store allows of `per_member` while it cannot ask the hub (absent: the
    /// store's default, `once`; docs/claims.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<crate::claims::OfflinePolicy>,
}

/// A validated rule set, windows parsed, ready for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// The authored set.
    pub set: RuleSet,
    /// `(from, to)` in ms per rule, by index in `set.rules`.
    pub windows: Vec<Option<(Millis, Millis)>>,
}

const TIER_CODES: &[&str] = &["normal", "silver", "gold", "diamond"];

fn id_like(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_:-.".contains(&b))
}

fn parse_time(s: &str) -> Option<Millis> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Largest amount of money any rule field may hold: the basket subtotal cap,
/// ¥100,000,000.00 (the edge refuses larger baskets with the same figure).
pub const MAX_MONEY: i64 = 10_000_000_000;

fn money(v: i64) -> bool {
    (0..=MAX_MONEY).contains(&v)
}

fn check_template(t: &CouponTemplate, at: &str) -> Result<(), String> {
    if t.off <= 0
        || t.off > 100_000_000
        || !money(t.min_spend)
        || t.valid_days == 0
        || t.valid_days > 3660
        || t.label.trim().is_empty()
    {
        return Err(format!(
            "{at}: a coupon needs a label, 0 < off ≤ 100000000, min_spend ≥ 0 and 1–3660 valid_days"
        ));
    }
    if !stores_scope_valid(&t.stores) {
        return Err(format!("{at}: coupon {STORES_SCOPE}"));
    }
    Ok(())
}

/// What a coupon's `stores` scope may hold, as an error message says it.
pub const STORES_SCOPE: &str = "stores are up to 1000 store ids of [A-Za-z0-9_-], 1-32 characters";

/// Whether a coupon's `stores` scope names store ids only (and not too many).
pub fn stores_scope_valid(stores: &[String]) -> bool {
    stores.len() <= 1_000
        && stores.iter().all(|s| {
            !s.is_empty()
                && s.len() <= 32
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A catalogue's items: unique SKUs (1–64 of `A-Z a-z 0-9 - _ . :`), labels of 1–64
/// characters, points 1–[`MAX_CATALOGUE_POINTS`], cash 0–[`MAX_MONEY`] fen.
fn check_catalogue(items: &[CatalogueItem]) -> Result<(), String> {
    if items.len() > MAX_CATALOGUE {
        return Err(format!("catalogue: at most {MAX_CATALOGUE} items"));
    }
    let mut skus = HashSet::new();
    for i in items {
        let sku_ok = !i.sku.is_empty()
            && i.sku.len() <= 64
            && i.sku
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if !sku_ok || !skus.insert(i.sku.as_str()) {
            return Err(
                "catalogue: each item needs a unique sku (1-64 of A-Z a-z 0-9 - _ . :)".into(),
            );
        }
        let label = i.label.trim().chars().count();
        if !(1..=64).contains(&label)
            || !(1..=MAX_CATALOGUE_POINTS).contains(&i.points)
            || !money(i.cash)
        {
            return Err(format!(
                "catalogue {}: label 1-64 characters, points 1-{MAX_CATALOGUE_POINTS}, cash 0-{MAX_MONEY} fen",
                i.sku
            ));
        }
        if i.stock_chain.is_some_and(|s| s > crate::stock::MAX_STOCK) {
            return Err(format!(
                "catalogue {}: stock_chain at most {}",
                i.sku,
                crate::stock::MAX_STOCK
            ));
        }
    }
    Ok(())
}

impl RuleSet {
    /// The catalogue item a basket line names.
    pub fn catalogue_item(&self, sku: &str) -> Option<&CatalogueItem> {
        self.catalogue.iter().find(|i| i.sku == sku)
    }

    /// Parses and validates a rule set from JSON.
    pub fn parse(json: &[u8]) -> Result<Compiled, String> {
        let set: RuleSet = serde_json::from_slice(json).map_err(|e| format!("rule set: {e}"))?;
        set.compile()
    }

    /// Validates every field; returns the compiled form.
    pub fn compile(self) -> Result<Compiled, String> {
        if !id_like(&self.version.to_ascii_lowercase(), 64) {
            return Err("version must be 1-64 characters of a-z, A-Z, 0-9, _ : - .".into());
        }
        if self.pending_points_days > 365 {
            return Err("pending_points_days must be 0-365".into());
        }
        if let Some(r) = &self.referral
            && (r.on_register < 0
                || r.on_first_purchase < 0
                || r.on_register > 1_000_000
                || r.on_first_purchase > 1_000_000)
        {
            return Err("referral points must be 0-1000000".into());
        }
        if let Some(w) = &self.welcome {
            if !(0..=1_000_000).contains(&w.register_points) {
                return Err("welcome.register_points must be 0-1000000".into());
            }
            if let Some(g) = &w.first_purchase {
                if !money(g.threshold) || !(0..=1_000_000).contains(&g.points) {
                    return Err(format!(
                        "welcome.first_purchase: threshold 0-{MAX_MONEY} fen and points 0-1000000"
                    ));
                }
                if g.points == 0 && g.coupon.is_none() {
                    return Err("welcome.first_purchase gives points, a coupon, or both".into());
                }
                if let Some(t) = &g.coupon {
                    check_template(t, "welcome.first_purchase.coupon")?;
                }
            }
        }
        for (tier, perks) in &self.tiers {
            if !TIER_CODES.contains(&tier.as_str()) {
                return Err(format!("tiers: unknown tier {tier:?}"));
            }
            if !(0..=1_000_000).contains(&perks.upgrade_points)
                || perks.free_shipping_over.is_some_and(|v| !money(v))
            {
                return Err(format!(
                    "tiers.{tier}: upgrade_points must be 0-1000000 and free_shipping_over 0-{MAX_MONEY}"
                ));
            }
            if let Some(t) = &perks.upgrade_coupon {
                check_template(t, &format!("tiers.{tier}.upgrade_coupon"))?;
            }
            let mut codes = HashSet::new();
            for b in &perks.benefits {
                if !id_like(&b.code, 32)
                    || b.label.trim().is_empty()
                    || !codes.insert(b.code.clone())
                {
                    return Err(format!(
                        "tiers.{tier}.benefits: each needs a unique code (a-z 0-9 _ : - .) and a label"
                    ));
                }
                if b.quota_per_month
                    .is_some_and(|q| q > crate::claims::MAX_LIMIT)
                {
                    return Err(format!(
                        "tiers.{tier}.benefits.{}: quota_per_month must be at most {}",
                        b.code,
                        crate::claims::MAX_LIMIT
                    ));
                }
            }
        }
        check_catalogue(&self.catalogue)?;
        let mut ids = HashSet::new();
        let mut windows = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            let at = format!("rule {:?}", r.id);
            if !id_like(&r.id, 64) || !ids.insert(r.id.clone()) {
                return Err(format!("{at}: ids must be unique, 1-64 of a-z 0-9 _ : - ."));
            }
            if r.label.trim().is_empty() || r.label.chars().count() > 64 {
                return Err(format!("{at}: label must be 1-64 characters"));
            }
            if r.source
                .as_deref()
                .is_some_and(|s| s != "campaign" && s != "tier")
            {
                return Err(format!("{at}: source must be campaign or tier"));
            }
            if r.group.as_deref().is_some_and(|g| !id_like(g, 64)) {
                return Err(format!("{at}: group must be 1-64 of a-z 0-9 _ : - ."));
            }
            // A per-member limit is a chain-wide counter: the hub counts up to this.
            if r.limits
                .per_member
                .is_some_and(|n| n > crate::claims::MAX_LIMIT)
            {
                return Err(format!(
                    "{at}: per_member must be at most {}",
                    crate::claims::MAX_LIMIT
                ));
            }
            if r.audience
                .tiers
                .iter()
                .any(|t| !TIER_CODES.contains(&t.as_str()))
            {
                return Err(format!("{at}: audience.tiers must be tier codes"));
            }
            if r.limits.budget_fen.is_some_and(|b| b < 0) {
                return Err(format!("{at}: limits.budget_fen must be ≥ 0"));
            }
            // Amounts stay within the subtotal cap, so no product or sum of them overflows.
            let amounts_ok = match &r.kind {
                RuleKind::Bundle(b) => money(b.price),
                RuleKind::OrderReduction(o) => {
                    money(o.threshold) && money(o.off) && o.cap.is_none_or(money)
                }
                RuleKind::CouponGrant(g) => money(g.threshold),
                _ => true,
            };
            if !amounts_ok {
                return Err(format!("{at}: money fields must be 0-{MAX_MONEY} fen"));
            }
            match &r.kind {
                RuleKind::ItemDiscount(d) => {
                    if !(0..=1000).contains(&d.pay_permille) {
                        return Err(format!("{at}: pay_permille must be 0-1000"));
                    }
                }
                RuleKind::Bundle(b) => {
                    if b.skus.len() < 2 || b.skus.len() > 20 || b.price < 0 {
                        return Err(format!("{at}: a bundle needs 2-20 skus and a price ≥ 0"));
                    }
                }
                RuleKind::OrderReduction(o) => {
                    if o.threshold < 0
                        || o.off <= 0
                        || (o.repeat && o.threshold == 0)
                        || o.cap.is_some_and(|c| c <= 0)
                    {
                        return Err(format!(
                            "{at}: needs threshold ≥ 0, off > 0, a threshold > 0 to repeat, cap > 0"
                        ));
                    }
                }
                RuleKind::CouponGrant(g) => {
                    if g.threshold < 0 {
                        return Err(format!("{at}: threshold must be ≥ 0"));
                    }
                    check_template(&g.coupon, &at)?;
                }
                RuleKind::PointsMultiplier(m) => {
                    if !(2..=10).contains(&m.multiplier) {
                        return Err(format!("{at}: multiplier must be 2-10"));
                    }
                }
            }
            let window = match &r.window {
                None => None,
                Some(w) => {
                    let (Some(from), Some(to)) = (parse_time(&w.from), parse_time(&w.to)) else {
                        return Err(format!(
                            "{at}: window.from and window.to must be RFC 3339 times"
                        ));
                    };
                    if from >= to {
                        return Err(format!("{at}: window.from must be before window.to"));
                    }
                    Some((from, to))
                }
            };
            windows.push(window);
        }
        Ok(Compiled { set: self, windows })
    }
}

impl Compiled {
    /// Whether any rule looks at the member's birthday (it is encrypted: decrypt only then).
    pub fn needs_birthday(&self) -> bool {
        self.set.rules.iter().any(|r| r.audience.birthday_month)
    }

    /// Whether pricing looks at the member's profile (tags, registration, birthday,
    /// channel) rather than only at what the facts derive (tier, balance, purchases).
    pub fn needs_profile(&self) -> bool {
        self.set.rules.iter().any(|r| {
            let a = &r.audience;
            !a.tags_any.is_empty()
                || a.new_member_days.is_some()
                || a.birthday_month
                || !a.channels.is_empty()
        })
    }

    /// The perks of a tier, if the set defines any.
    pub fn perks(&self, tier: &str) -> Option<&TierPerks> {
        self.set.tiers.get(tier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_and_bad_values_are_refused() {
        let bad = [
            r#"{"version":"v1","rules":[{"id":"a","label":"x","type":"order_reduction","threshold":100,"of":10}]}"#,
            r#"{"version":"v1","rules":[{"id":"a","label":"x","type":"item_discount","pay_permille":1200}]}"#,
            r#"{"version":"v1","rules":[{"id":"a","label":"x","type":"teleport"}]}"#,
            r#"{"version":"v1","rules":[{"id":"a","label":"x","type":"order_reduction","threshold":0,"off":10,"repeat":true}]}"#,
            r#"{"version":"v1","rules":[{"id":"a","label":"x","type":"bundle","skus":["A"],"price":100}]}"#,
            r#"{"version":"v1","rules":[{"id":"a","label":"x","type":"points_multiplier","multiplier":2},{"id":"a","label":"y","type":"points_multiplier","multiplier":3}]}"#,
            r#"{"version":"v1","rules":[{"id":"a","label":"x","type":"points_multiplier","multiplier":2,"window":{"from":"2026-12-01","to":"2026-12-02"}}]}"#,
            r#"{"version":"v1","tiers":{"platinum":{}}}"#,
            r#"{"version":"","rules":[]}"#,
            r#"{"version":"v1","colour":"red"}"#,
        ];
        for b in bad {
            assert!(RuleSet::parse(b.as_bytes()).is_err(), "{b}");
        }
        assert!(
            RuleSet::parse(br#"{"version":"v1"}"#).is_ok(),
            "an empty set is valid"
        );
    }
}

//! Member profiles as state-based CRDTs: each field a last-writer-wins register under
//! [`Stamp`]s, preference tags an add-wins set. Merging is commutative, associative and
//! idempotent, so replicas that saw the same updates in any order, any number of
//! times, hold the same profile. Field values are opaque bytes (the edge stores them
//! encrypted under the member's key).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use patron_domain::Detail;

use crate::hlc::Stamp;

/// A last-writer-wins register: the value with the largest stamp wins; stamps are
/// totally ordered (wall, counter, node), so every replica picks the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww<T> {
    /// The value (None: cleared).
    pub value: T,
    /// When, and by whom, it was written.
    pub stamp: Stamp,
}

impl<T: Clone> Lww<T> {
    /// Keeps whichever write is later.
    pub fn merge(&mut self, other: &Lww<T>) {
        if other.stamp > self.stamp {
            *self = other.clone();
        }
    }
}

/// An add-wins (observed-remove) set: removing a tag removes the additions the remover
/// had seen; an addition made concurrently elsewhere survives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddWinsSet {
    adds: BTreeMap<String, BTreeSet<Stamp>>,
    removed: BTreeSet<Stamp>,
    /// Removes written elsewhere: per tag, every add stamped at or before this is gone.
    #[serde(default)]
    removed_upto: BTreeMap<String, Stamp>,
}

impl AddWinsSet {
    /// Adds `tag`, with a fresh stamp.
    pub fn add(&mut self, tag: &str, stamp: Stamp) {
        self.adds.entry(tag.to_string()).or_default().insert(stamp);
    }

    /// Removes `tag` as this replica sees it now.
    pub fn remove(&mut self, tag: &str) {
        if let Some(s) = self.adds.get(tag) {
            self.removed.extend(s.iter().cloned());
        }
    }

    /// Union of both replicas' additions and removals.
    /// Removes the adds of `tag` stamped at or before `upto`: how a replica applies a
    /// remove written elsewhere, where the remover's observed adds are known only by
    /// time. An add stamped after the remove survives (add wins).
    pub fn remove_upto(&mut self, tag: &str, upto: &Stamp) {
        match self.removed_upto.get_mut(tag) {
            Some(cur) if *cur >= *upto => {}
            Some(cur) => *cur = upto.clone(),
            None => {
                self.removed_upto.insert(tag.to_string(), upto.clone());
            }
        }
    }

    pub fn merge(&mut self, other: &AddWinsSet) {
        for (tag, stamps) in &other.adds {
            self.adds
                .entry(tag.clone())
                .or_default()
                .extend(stamps.iter().cloned());
        }
        self.removed.extend(other.removed.iter().cloned());
        for (tag, upto) in &other.removed_upto {
            self.remove_upto(tag, upto);
        }
    }

    /// The tags present: those with an addition not removed.
    pub fn tags(&self) -> Vec<String> {
        self.adds
            .iter()
            .filter(|(t, s)| {
                let upto = self.removed_upto.get(t.as_str());
                s.iter()
                    .any(|st| !self.removed.contains(st) && upto.is_none_or(|u| st > u))
            })
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// A member profile: named fields and tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Field name → register (values opaque, encrypted at the edge).
    pub fields: BTreeMap<String, Lww<Option<Vec<u8>>>>,
    /// Preference tags.
    pub tags: AddWinsSet,
}

impl Profile {
    /// Writes a field.
    pub fn set(&mut self, field: &str, value: Option<Vec<u8>>, stamp: Stamp) {
        let w = Lww { value, stamp };
        match self.fields.get_mut(field) {
            Some(cur) => cur.merge(&w),
            None => {
                self.fields.insert(field.to_string(), w);
            }
        }
    }

    /// The latest stamp of any write this profile holds (fields and tag additions): a
    /// new local write must be stamped after it to win over everything seen.
    pub fn latest(&self) -> Option<&Stamp> {
        let fields = self.fields.values().map(|w| &w.stamp);
        let tags = self.tags.adds.values().flat_map(|s| s.iter());
        fields.chain(tags).max()
    }

    /// Applies one change written elsewhere.
    pub fn apply(&mut self, op: &ProfileOp) {
        match op {
            ProfileOp::Set {
                field,
                value,
                stamp,
            } => self.set(field, value.clone(), stamp.clone()),
            ProfileOp::AddTag { tag, stamp } => self.tags.add(tag, stamp.clone()),
            ProfileOp::RemoveTag { tag, stamp } => self.tags.remove_upto(tag, stamp),
        }
    }

    pub fn merge(&mut self, other: &Profile) {
        for (k, w) in &other.fields {
            match self.fields.get_mut(k) {
                Some(cur) => cur.merge(w),
                None => {
                    self.fields.insert(k.clone(), w.clone());
                }
            }
        }
        self.tags.merge(&other.tags);
    }
}

/// One profile change as a fact carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProfileOp {
    /// A field's new value (None: cleared).
    Set {
        /// The field.
        field: String,
        /// Its value (opaque; ciphertext at the edge).
        value: Option<Vec<u8>>,
        /// When, by whom.
        stamp: Stamp,
    },
    /// A tag added.
    AddTag {
        /// The tag.
        tag: String,
        /// When, by whom.
        stamp: Stamp,
    },
    /// A tag removed (the adds it saw: those stamped before it).
    RemoveTag {
        /// The tag.
        tag: String,
        /// When, by whom.
        stamp: Stamp,
    },
}

/// The profile fields a member fact sets, in the order a registration sets them.
pub const FIELDS: [&str; 3] = ["name", "birthday", "marketing"];

/// The stamp of a member fact's profile changes: the `hlc` its store wrote, else (older
/// facts) its time with counter 0; always under `node`, the store it came from,
/// whatever the fact says.
pub fn stamp_of(detail: &Detail, at: i64, node: &str) -> Stamp {
    let written = match detail {
        Detail::MemberRegistered(r) => r.hlc.clone(),
        Detail::MemberUpdated(c) => c.hlc.clone(),
        _ => None,
    };
    let mut stamp = written.unwrap_or(Stamp {
        wall: at.max(0) as u64,
        counter: 0,
        node: String::new(),
    });
    stamp.node = node.to_string();
    stamp
}

/// A text value as the profile keeps it: its bytes (`None`: cleared or never given).
fn text(v: Option<&String>) -> Option<Vec<u8>> {
    v.map(|s| s.clone().into_bytes())
}

/// A yes/no value as the profile keeps it: `true` or `false` as text.
fn flag(v: Option<bool>) -> Option<Vec<u8>> {
    v.map(|b| b.to_string().into_bytes())
}

/// The profile changes a fact with `detail` carries, all under `stamp`: a registration
/// sets the fields it has and the marketing consent; an update sets the fields it names
/// and adds and removes tags. Other kinds carry none. Values are the fact's own
/// (ciphertext as base64 text, booleans as `true`/`false`), so every replica holds the
/// same bytes.
pub fn ops_of(detail: &Detail, stamp: &Stamp) -> Vec<ProfileOp> {
    let set = |field: &str, value: Option<Vec<u8>>| ProfileOp::Set {
        field: field.to_string(),
        value,
        stamp: stamp.clone(),
    };
    let mut ops = Vec::new();
    match detail {
        Detail::MemberRegistered(r) => {
            // Only what the member gave: a registration without a name must not clear
            // the name another store took from them (the two may be merged into one
            // member).
            for (field, v) in [("name", &r.name), ("birthday", &r.birthday)] {
                if v.is_some() {
                    ops.push(set(field, text(v.as_ref())));
                }
            }
            let marketing = r.consents.as_ref().and_then(|c| c.marketing);
            ops.push(set("marketing", flag(marketing)));
        }
        Detail::MemberUpdated(c) => {
            if let Some(v) = &c.name {
                ops.push(set("name", text(v.as_ref())));
            }
            if let Some(v) = &c.birthday {
                ops.push(set("birthday", text(v.as_ref())));
            }
            if let Some(v) = c.marketing {
                ops.push(set("marketing", flag(v)));
            }
            // The edge removes, then adds: a tag in both lists ends present.
            for tag in c.tags_remove.iter().filter(|t| !c.tags_add.contains(t)) {
                ops.push(ProfileOp::RemoveTag {
                    tag: tag.clone(),
                    stamp: stamp.clone(),
                });
            }
            for tag in &c.tags_add {
                ops.push(ProfileOp::AddTag {
                    tag: tag.clone(),
                    stamp: stamp.clone(),
                });
            }
        }
        _ => {}
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn st(wall: u64, counter: u32, node: &str) -> Stamp {
        Stamp {
            wall,
            counter,
            node: node.into(),
        }
    }

    #[test]
    fn the_later_write_wins_and_ties_break_by_node() {
        let mut a = Profile::default();
        a.set("name", Some(b"A".to_vec()), st(10, 0, "S001"));
        let mut b = Profile::default();
        b.set("name", Some(b"B".to_vec()), st(10, 0, "S002"));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.fields["name"].value.as_deref(), Some(&b"B"[..]));
    }

    #[test]
    fn ops_from_facts_apply_the_same_in_any_order() {
        let ops = [
            ProfileOp::AddTag {
                tag: "vip".into(),
                stamp: st(1, 0, "S001"),
            },
            ProfileOp::Set {
                field: "name".into(),
                value: Some(b"A".to_vec()),
                stamp: st(2, 0, "S001"),
            },
            ProfileOp::RemoveTag {
                tag: "vip".into(),
                stamp: st(3, 0, "S002"),
            },
            ProfileOp::AddTag {
                tag: "vip".into(),
                stamp: st(4, 0, "S001"),
            },
            ProfileOp::Set {
                field: "name".into(),
                value: Some(b"B".to_vec()),
                stamp: st(5, 0, "S002"),
            },
        ];
        let mut fwd = Profile::default();
        ops.iter().for_each(|o| fwd.apply(o));
        assert_eq!(fwd.fields["name"].value.as_deref(), Some(&b"B"[..]));
        assert_eq!(
            fwd.tags.tags(),
            vec!["vip".to_string()],
            "the later add survives"
        );
        // Facts arrive in any order at the hub: every order gives the same profile.
        let mut idx: Vec<usize> = (0..ops.len()).collect();
        let mut perms = 0;
        permute(&mut idx, 0, &mut |order| {
            let mut p = Profile::default();
            order.iter().for_each(|i| p.apply(&ops[*i]));
            assert_eq!(p, fwd, "order {order:?}");
            perms += 1;
        });
        assert_eq!(perms, 120);
        // Without the later add, the remove takes the tag away.
        let mut without = Profile::default();
        ops.iter()
            .filter(|o| !matches!(o, ProfileOp::AddTag { stamp, .. } if stamp.wall == 4))
            .for_each(|o| without.apply(o));
        assert!(without.tags.tags().is_empty());
    }

    fn permute(v: &mut Vec<usize>, k: usize, f: &mut impl FnMut(&[usize])) {
        if k == v.len() {
            f(v);
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            permute(v, k + 1, f);
            v.swap(k, i);
        }
    }

    fn detail(kind: patron_domain::Kind, v: serde_json::Value) -> Detail {
        Detail::parse(kind, &v.to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn facts_carry_their_changes_under_their_store() {
        use patron_domain::Kind;
        let idx = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let reg = detail(
            Kind::MemberRegistered,
            serde_json::json!({"phone_idx": idx, "name": "c1", "birthday": null,
                               "consents": {"marketing": true},
                               "hlc": {"wall": 5, "counter": 2, "node": "forged"}}),
        );
        let s = stamp_of(&reg, 1, "S001");
        assert_eq!(
            s,
            st(5, 2, "S001"),
            "the node is the store the fact came from"
        );
        let mut p = Profile::default();
        ops_of(&reg, &s).iter().for_each(|o| p.apply(o));
        assert_eq!(p.fields.len(), 2, "a birthday not given is not written");
        assert_eq!(p.fields["name"].value.as_deref(), Some(&b"c1"[..]));
        assert_eq!(p.fields["marketing"].value.as_deref(), Some(&b"true"[..]));
        // An update names only what changed; a tag both removed and added stays; a
        // field sent as null is cleared.
        let upd = detail(
            Kind::MemberUpdated,
            serde_json::json!({"marketing": false, "birthday": null, "tags_add": ["a"],
                               "tags_remove": ["a", "b"]}),
        );
        let s = stamp_of(&upd, 9, "S002");
        assert_eq!(s, st(9, 0, "S002"), "no hlc: the fact's time");
        let ops = ops_of(&upd, &s);
        assert_eq!(ops.len(), 4, "{ops:?}");
        ops.iter().for_each(|o| p.apply(o));
        assert_eq!(p.fields["name"].value.as_deref(), Some(&b"c1"[..]));
        assert_eq!(p.fields["marketing"].value.as_deref(), Some(&b"false"[..]));
        assert_eq!(p.fields["birthday"].value, None);
        assert_eq!(p.tags.tags(), vec!["a".to_string()]);
        let gift = detail(Kind::UpgradeGift, serde_json::json!({"tier": "gold"}));
        assert!(ops_of(&gift, &s).is_empty());
    }

    #[test]
    fn a_concurrent_add_survives_a_remove() {
        let mut a = AddWinsSet::default();
        a.add("vip", st(1, 0, "S001"));
        let mut b = a.clone();
        b.remove("vip");
        a.add("vip", st(2, 0, "S001")); // not seen by b's remove
        b.merge(&a);
        assert_eq!(b.tags(), vec!["vip".to_string()]);
        let mut c = b.clone();
        c.remove("vip");
        c.merge(&a);
        assert!(
            c.tags().is_empty(),
            "a remove that saw every add wins over their replay"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(u8, Option<u8>, u64, u8),
        Add(u8, u64, u8),
        Remove(u8),
        /// A remove written elsewhere, as a fact carries it (`remove_upto`).
        RemoveUpto(u8, u64, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, proptest::option::of(any::<u8>()), 0u64..20, 0u8..3)
                .prop_map(|(f, v, w, n)| Op::Set(f, v, w, n)),
            (0u8..3, 0u64..20, 0u8..3).prop_map(|(t, w, n)| Op::Add(t, w, n)),
            (0u8..3).prop_map(Op::Remove),
            (0u8..3, 0u64..20, 0u8..3).prop_map(|(t, w, n)| Op::RemoveUpto(t, w, n)),
        ]
    }

    /// Applies `ops` as replica `who`: real stamps are unique per writer, so each
    /// replica writes under its own node names.
    fn replica(ops: &[Op], who: &str) -> Profile {
        let mut p = Profile::default();
        for (i, o) in ops.iter().enumerate() {
            match o {
                Op::Set(f, v, w, n) => p.set(
                    &format!("f{f}"),
                    v.map(|x| vec![x]),
                    st(*w, i as u32, &format!("{who}{n}")),
                ),
                Op::Add(t, w, n) => p
                    .tags
                    .add(&format!("t{t}"), st(*w, i as u32, &format!("{who}{n}"))),
                Op::Remove(t) => p.tags.remove(&format!("t{t}")),
                Op::RemoveUpto(t, w, n) => p.apply(&ProfileOp::RemoveTag {
                    tag: format!("t{t}"),
                    stamp: st(*w, i as u32, &format!("{who}{n}")),
                }),
            }
        }
        p
    }

    /// A member update as a store writes it: a name (one of three ciphertexts, or
    /// cleared), the marketing consent, tags added and removed, under the store's
    /// hybrid clock (wall time, counter) as its fact carries it; and the store.
    fn update() -> impl Strategy<Value = (serde_json::Value, u8)> {
        let tags = proptest::collection::btree_set(0u8..3, 0..3)
            .prop_map(|s| s.into_iter().map(|t| format!("t{t}")).collect::<Vec<_>>());
        (
            proptest::option::of(proptest::option::of(0u8..3)),
            proptest::option::of(any::<bool>()),
            tags.clone(),
            tags,
            0u64..20,
            0u8..3,
        )
            .prop_map(|(name, marketing, add, remove, wall, store)| {
                let mut v = serde_json::json!({"tags_add": add, "tags_remove": remove,
                                               "hlc": {"wall": wall, "counter": 0, "node": "x"}});
                if let Some(name) = name {
                    v["name"] = name.map(|n| format!("c{n}")).into();
                }
                if let Some(m) = marketing {
                    v["marketing"] = m.into();
                }
                (v, store)
            })
    }

    proptest! {
        /// Real facts through the production path (`ops_of` on the fact's details,
        /// `stamp_of` for its stamp, `Profile::apply`, removes included): applied in any
        /// order they give one profile, and split over three replicas that merge they
        /// give the same fields and tags as all applied at one.
        #[test]
        fn real_updates_give_one_profile_in_any_order_and_over_any_replicas(
            facts in proptest::collection::vec(update(), 0..14),
            seed in any::<u64>(),
            split in proptest::collection::vec(0usize..3, 14),
        ) {
            use patron_domain::Kind;
            // A store's clock never stamps two facts alike: the counter, per store,
            // tells apart facts of one store in one millisecond (two stores may stamp
            // the same wall and counter: the store breaks that tie).
            let mut per_store = [0u64; 3];
            let ops: Vec<Vec<ProfileOp>> = facts
                .iter()
                .map(|(v, store)| {
                    let mut v = v.clone();
                    let n = &mut per_store[usize::from(*store)];
                    v["hlc"]["counter"] = (*n).into();
                    *n += 1;
                    let d = detail(Kind::MemberUpdated, v);
                    ops_of(&d, &stamp_of(&d, 1, &format!("S00{store}")))
                })
                .collect();
            let mut all = Profile::default();
            ops.iter().flatten().for_each(|o| all.apply(o));
            let mut order: Vec<usize> = (0..ops.len()).collect();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut shuffled = Profile::default();
            order.iter().for_each(|i| ops[*i].iter().for_each(|o| shuffled.apply(o)));
            prop_assert_eq!(&shuffled, &all, "order {:?}", order);
            let mut replicas = vec![Profile::default(); 3];
            for (i, o) in ops.iter().enumerate() {
                o.iter().for_each(|o| replicas[split[i]].apply(o));
            }
            let mut merged = replicas[2].clone();
            merged.merge(&replicas[0]);
            merged.merge(&replicas[1]);
            prop_assert_eq!(&merged.fields, &all.fields);
            prop_assert_eq!(merged.tags.tags(), all.tags.tags());
        }

        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in proptest::collection::vec(op(), 0..12),
            b in proptest::collection::vec(op(), 0..12),
            c in proptest::collection::vec(op(), 0..12),
        ) {
            let (a, b, c) = (replica(&a, "A"), replica(&b, "B"), replica(&c, "C"));
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(&c);
            let mut bc = b.clone(); bc.merge(&c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = a.clone(); aa.merge(&a);
            prop_assert_eq!(&aa, &a);
            prop_assert_eq!(ab.tags.tags(), ba.tags.tags());
        }
    }
}

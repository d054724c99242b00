//! Member profiles as state-based CRDTs: each field a last-writer-wins register under
//! [`Stamp`]s, preference tags an add-wins set. Merging is commutative, associative and
//! idempotent, so replicas that saw the same updates in any order, any number of
//! times, hold the same profile. Field values are opaque bytes (the edge stores them
//! encrypted under the member's key).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

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
    pub fn merge(&mut self, other: &AddWinsSet) {
        for (tag, stamps) in &other.adds {
            self.adds
                .entry(tag.clone())
                .or_default()
                .extend(stamps.iter().cloned());
        }
        self.removed.extend(other.removed.iter().cloned());
    }

    /// The tags present: those with an addition not removed.
    pub fn tags(&self) -> Vec<String> {
        self.adds
            .iter()
            .filter(|(_, s)| s.iter().any(|st| !self.removed.contains(st)))
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

    /// Merges another replica's profile, field by field.
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
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, proptest::option::of(any::<u8>()), 0u64..20, 0u8..3)
                .prop_map(|(f, v, w, n)| Op::Set(f, v, w, n)),
            (0u8..3, 0u64..20, 0u8..3).prop_map(|(t, w, n)| Op::Add(t, w, n)),
            (0u8..3).prop_map(Op::Remove),
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
            }
        }
        p
    }

    proptest! {
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

//! The receiving side of sync, as the hub runs it: [`crate::judge`] decides from the
//! origin's high alone; [`settle`] then checks that the facts a batch repeats are the
//! facts already held under those numbers (a store restored from an older copy that
//! wrote on would send other facts under the same sequences).

use crate::session::{Batch, Fact, Judgement};

/// The refusal for a fact that differs from the one held under its sequence.
pub const CONFLICT: &str = "conflict: a fact differs from the one the hub holds under the same sequence (a database restored from an older copy must start a new incarnation)";

/// The judgement once the repeated facts are compared with what is held: `differs`
/// says whether any of the given facts differs from the one held under its sequence
/// (storage reads them; `Err` is storage's).
pub fn settle<E>(
    judgement: Judgement,
    b: &Batch,
    differs: impl FnOnce(&[Fact]) -> Result<bool, E>,
) -> Result<Judgement, E> {
    let overlap = match judgement {
        Judgement::AlreadyHeld => b.facts.len(),
        Judgement::Apply { skip, .. } => skip,
        _ => 0,
    };
    if overlap > 0 && differs(&b.facts[..overlap])? {
        return Ok(Judgement::Refuse(CONFLICT));
    }
    Ok(judgement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::batch;
    use patron_protocol::Origin;

    fn facts(bodies: &[&str]) -> Batch {
        let o = Origin {
            node: "S001".into(),
            incarnation: Default::default(),
        };
        batch(
            o.clone(),
            bodies
                .iter()
                .enumerate()
                .map(|(i, b)| Fact {
                    origin: o.clone(),
                    seq: i as u64 + 1,
                    body: (*b).into(),
                })
                .collect(),
        )
    }

    #[test]
    fn a_repeated_fact_must_be_the_one_held() {
        let held = ["a", "b"];
        let differs = |fs: &[Fact]| -> Result<bool, ()> {
            Ok(fs
                .iter()
                .any(|f| held.get(f.seq as usize - 1) != Some(&f.body.as_str())))
        };
        let same = facts(&["a", "b", "c"]);
        let apply = Judgement::Apply { skip: 2, high: 3 };
        assert_eq!(settle(apply, &same, differs), Ok(apply));
        let other = facts(&["a", "x", "c"]);
        assert_eq!(
            settle(apply, &other, differs),
            Ok(Judgement::Refuse(CONFLICT))
        );
        let again = facts(&["a", "x"]);
        assert_eq!(
            settle(Judgement::AlreadyHeld, &again, differs),
            Ok(Judgement::Refuse(CONFLICT))
        );
        // Nothing repeated: nothing read.
        let fresh = Judgement::Apply { skip: 0, high: 3 };
        assert_eq!(settle(fresh, &other, |_| Err(())), Ok(fresh));
    }
}

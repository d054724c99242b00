//! What a lookup may show: the rule that decides between a masked and a full member,
//! and the masking itself.

use patron_protocol::pos::{LookupPurpose, Member};

/// How much of a member a lookup shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disclosure {
    /// No birthday; the name shortened to its first character.
    Masked,
    /// The whole profile.
    Full,
}

impl Disclosure {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Disclosure::Masked => "masked",
            Disclosure::Full => "full",
        }
    }
}

/// Who is asking, as far as disclosure is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// A POS lane: identifies members at sales.
    Lane,
    /// A cashier: sales, and member service at the desk.
    Cashier,
    /// The store's manager or administrator.
    Admin,
}

/// What `asker` sees for `purpose`. A sale needs no birthday and no full name (the
/// promotions that use the birthday are priced by the edge, not the POS); member
/// service needs the profile it corrects, and only staff give it; administration
/// sees everything it is accountable for.
pub fn disclosure(asker: Asker, purpose: LookupPurpose) -> Disclosure {
    match (asker, purpose) {
        (Asker::Admin, _) | (Asker::Cashier, LookupPurpose::Service) => Disclosure::Full,
        (Asker::Lane, _) | (Asker::Cashier, LookupPurpose::Sale) => Disclosure::Masked,
    }
}

/// The purpose's stored name.
pub fn purpose_str(p: LookupPurpose) -> &'static str {
    match p {
        LookupPurpose::Sale => "sale",
        LookupPurpose::Service => "service",
    }
}

/// `name` shortened to its first character, the rest as one `*` each: `张三丰` → `张**`.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

/// `member` as `d` lets it be shown.
pub fn disclose(mut member: Member, d: Disclosure) -> Member {
    if d == Disclosure::Masked {
        member.name = member.name.as_deref().map(mask_name);
        member.birthday = None;
    }
    member
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_staff_at_the_desk_and_administrators_see_the_whole_profile() {
        use Asker::*;
        use LookupPurpose::*;
        assert_eq!(disclosure(Lane, Sale), Disclosure::Masked);
        assert_eq!(disclosure(Lane, Service), Disclosure::Masked);
        assert_eq!(disclosure(Cashier, Sale), Disclosure::Masked);
        assert_eq!(disclosure(Cashier, Service), Disclosure::Full);
        assert_eq!(disclosure(Admin, Sale), Disclosure::Full);
    }

    #[test]
    fn names_keep_their_first_character_only() {
        assert_eq!(mask_name("张三丰"), "张**");
        assert_eq!(mask_name("Li"), "L*");
        assert_eq!(mask_name("王"), "王");
        assert_eq!(mask_name(""), "");
    }
}

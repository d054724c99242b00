//! The rule-set format lives in `patron_domain::rules`, shared with the hub (which
//! validates a rule set before it publishes it).

pub use patron_domain::rules::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guide_examples_parse() {
        let c = RuleSet::parse(include_bytes!("../../../rules/examples.json"));
        let c = c.unwrap_or_else(|e| panic!("{e}"));
        let labels: Vec<&str> = c.set.rules.iter().map(|r| r.label.as_str()).collect();
        for l in [
            "满200减30",
            "满300赠50元券",
            "限时8折",
            "A+B=¥199",
            "生日月双倍积分",
            "首单立减10元",
            "银卡9.5折",
        ] {
            assert!(labels.contains(&l), "{l} missing from the fixture");
        }
    }
}

//! Emergency numbers and advice wording per region, kept as data in `data/regions.toml`.

use std::sync::LazyLock;

use serde::Deserialize;

use crate::kb::Disposition;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub id: String,
    pub name: String,
    /// The emergency telephone number.
    pub emergency: String,
    /// The emergency department's common name.
    pub place: String,
    /// The urgent-advice service.
    pub urgent: String,
    advice: PerDisposition,
    safety_net: PerDisposition,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerDisposition {
    emergency: String,
    urgent: String,
    routine: String,
    #[serde(rename = "self-care")]
    self_care: String,
}

impl PerDisposition {
    fn get(&self, d: Disposition) -> &str {
        match d {
            Disposition::Emergency => &self.emergency,
            Disposition::Urgent => &self.urgent,
            Disposition::Routine => &self.routine,
            Disposition::SelfCare => &self.self_care,
        }
    }
}

#[derive(Deserialize)]
struct Regions {
    region: Vec<Region>,
}

static REGIONS: LazyLock<Vec<Region>> = LazyLock::new(|| {
    toml::from_str::<Regions>(include_str!("../data/regions.toml"))
        .expect("data/regions.toml is checked by the tests")
        .region
});

impl Region {
    /// Every region the checker knows, the default (the UK) first.
    pub fn all() -> &'static [Region] {
        &REGIONS
    }

    pub fn get(id: &str) -> Option<&'static Region> {
        Region::all().iter().find(|r| r.id.eq_ignore_ascii_case(id))
    }

    pub fn uk() -> &'static Region {
        &Region::all()[0]
    }

    /// What to do now.
    pub fn advice(&self, d: Disposition) -> String {
        self.fill(self.advice.get(d))
    }

    /// When to seek help sooner.
    pub fn safety_net(&self, d: Disposition) -> String {
        self.fill(self.safety_net.get(d))
    }

    fn fill(&self, text: &str) -> String {
        text.replace("{emergency}", &self.emergency)
            .replace("{place}", &self.place)
            .replace("{urgent}", &self.urgent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_fill_their_numbers() {
        assert_eq!(Region::uk().id, "uk");
        let uk = Region::uk().advice(Disposition::Emergency);
        assert!(uk.contains("999") && uk.contains("A&E"), "{uk}");
        let us = Region::get("US")
            .expect("the US is a region")
            .advice(Disposition::Emergency);
        assert!(us.contains("911") && us.contains("ER"), "{us}");
        for r in Region::all() {
            for d in Disposition::ALL {
                assert!(
                    !r.advice(d).contains('{') && !r.safety_net(d).contains('{'),
                    "{} {d}",
                    r.id
                );
            }
        }
    }
}

//! Generated passwords: random words a person can read out and type, strong enough for the password rule.

use anyhow::{Result, bail};
use confide_domain::password::NewPassword;
use rand::Rng;

/// 256 short, common, distinct words: each one drawn adds 8 bits.
const WORDS: [&str; 256] = [
    "acorn", "almond", "amber", "anchor", "apple", "apron", "arrow", "aspen", "atlas", "autumn", "badge",
    "bamboo", "banjo", "barley", "basil", "beacon", "beetle", "berry", "birch", "biscuit", "blizzard",
    "blossom", "bonnet", "border", "bottle", "bracket", "branch", "breeze", "brick", "bridge", "bronze",
    "brook", "bubble", "bucket", "bugle", "butter", "button", "cabin", "cactus", "camel", "candle", "canoe",
    "canvas", "canyon", "carbon", "carpet", "carrot", "castle", "cedar", "cellar", "cherry", "chimney",
    "cider", "cinder", "citrus", "clover", "cobalt", "cocoa", "comet", "compass", "copper", "coral",
    "cotton", "cradle", "crater", "cricket", "crystal", "cupboard", "daisy", "dolphin", "domino", "donkey",
    "dragon", "drift", "dune", "eagle", "easel", "ember", "emerald", "falcon", "feather", "fern", "fiddle",
    "finch", "flannel", "flint", "forest", "fossil", "fountain", "fox", "gadget", "galaxy", "garden",
    "garnet", "gecko", "ginger", "glacier", "goblet", "goose", "granite", "gravel", "harbor", "harp",
    "harvest", "hazel", "heron", "hickory", "honey", "horizon", "hornet", "husky", "igloo", "indigo",
    "island", "ivory", "jacket", "jasmine", "jelly", "jigsaw", "jungle", "juniper", "kayak", "kettle",
    "kiwi", "ladder", "lagoon", "lantern", "larch", "lemon", "lentil", "lilac", "linen", "lobster", "locket",
    "lotus", "lumber", "magnet", "mango", "maple", "marble", "meadow", "meerkat", "melon", "meteor",
    "mitten", "monsoon", "mosaic", "mountain", "muffin", "mural", "mustard", "napkin", "nebula", "nectar",
    "nickel", "nutmeg", "oasis", "oatmeal", "ocean", "olive", "onion", "orbit", "orchid", "otter", "oyster",
    "paddle", "pancake", "panther", "papaya", "parcel", "parrot", "pebble", "pelican", "pepper", "pewter",
    "pigeon", "pillow", "pine", "planet", "plum", "pocket", "pollen", "poppy", "prairie", "pretzel",
    "puffin", "pumpkin", "quartz", "quill", "quilt", "rabbit", "radish", "raven", "reef", "rhubarb",
    "ribbon", "river", "robin", "rocket", "saddle", "saffron", "salmon", "sapphire", "satchel", "scarf",
    "sequoia", "shadow", "shovel", "silver", "sketch", "sled", "sparrow", "spindle", "sponge", "spruce",
    "squid", "stable", "starling", "stream", "summit", "sunset", "swallow", "tablet", "talon", "teapot",
    "thimble", "thistle", "thunder", "tiger", "timber", "toffee", "tomato", "topaz", "tractor", "trellis",
    "trumpet", "tulip", "tundra", "turnip", "velvet", "violet", "volcano", "wafer", "wagon", "walnut",
    "walrus", "willow", "window", "winter", "wizard", "wombat", "yarrow", "yogurt", "zebra", "zephyr",
    "zinnia",
];

/// Four words and two digits, about 38 bits: far beyond online guessing, which login throttles, and
/// costly offline against Argon2.
const WORD_COUNT: usize = 4;

/// A new random password that passes the password rule for someone with these `related` details.
pub fn generate(related: &[&str]) -> Result<NewPassword> {
    let mut rng = rand::rng();
    // A draw can spell something the strength estimate dislikes, or contain the person's name; draw again.
    for _ in 0..100 {
        let mut parts: Vec<String> = (0..WORD_COUNT)
            .map(|_| WORDS[rng.random_range(0..WORDS.len())].to_owned())
            .collect();
        parts.push(rng.random_range(10..100).to_string());
        if let Ok(password) = NewPassword::parse(&parts.join("-"), related) {
            return Ok(password);
        }
    }
    bail!("could not generate a password that passes the password rule")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_words_are_distinct_lowercase_letters() {
        let unique: HashSet<_> = WORDS.iter().collect();
        assert_eq!(unique.len(), WORDS.len());
        assert!(WORDS.iter().all(|w| w.chars().all(|c| c.is_ascii_lowercase())));
    }

    #[test]
    fn generated_passwords_pass_the_rule_and_differ() {
        let related = ["Ann Lee", "ann.lee@example.org"];
        let passwords: HashSet<String> = (0..20)
            .map(|_| generate(&related).unwrap().expose().to_owned())
            .collect();
        assert_eq!(passwords.len(), 20);
        for p in &passwords {
            assert_eq!(p.split('-').count(), WORD_COUNT + 1, "{p}");
        }
    }
}

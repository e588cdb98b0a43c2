//! Cron schedules: 5 fields (minute first) or 6 (seconds first), via croner.

use chrono::{DateTime, Local};
use croner::Cron;

pub fn parse(pattern: &str) -> Result<Cron, String> {
    pattern.parse::<Cron>().map_err(|e| e.to_string())
}

/// The first time after `after` the schedule fires.
pub fn next_after(cron: &Cron, after: DateTime<Local>) -> Option<DateTime<Local>> {
    cron.find_next_occurrence(&after, false).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_fields() {
        let now = Local::now();
        let every_15 = parse("*/15 * * * *").expect("5 fields");
        let next = next_after(&every_15, now).expect("next");
        assert!(next > now && (next - now).num_minutes() <= 15);
        let every_2s = parse("*/2 * * * * *").expect("6 fields");
        let next = next_after(&every_2s, now).expect("next");
        assert!((next - now).num_milliseconds() <= 2000);
        assert!(parse("not a schedule").is_err());
    }
}

use jiff::Timestamp;
use jiff::civil::{Date, Weekday, date};
use jiff::tz::TimeZone;
use proptest::prelude::*;

use super::*;

fn london() -> TimeZone {
    TimeZone::get("Europe/London").unwrap()
}

fn m(s: &str) -> MinuteOfDay {
    s.parse().unwrap()
}

fn rule(weekday: Weekday, start: &str, end: &str, slot: i64) -> AvailabilityRule {
    AvailabilityRule::new(
        weekday,
        m(start),
        m(end),
        SlotLength::try_from(slot).unwrap(),
        KindsOffered::Either,
        date(2026, 1, 1),
        None,
    )
    .unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn day(tz: &TimeZone, d: Date) -> (Timestamp, Timestamp) {
    let from = d.to_zoned(tz.clone()).unwrap().timestamp();
    let until = d.tomorrow().unwrap().to_zoned(tz.clone()).unwrap().timestamp();
    (from, until)
}

fn local_times(tz: &TimeZone, slots: &[Slot]) -> Vec<String> {
    slots
        .iter()
        .map(|s| s.start.to_zoned(tz.clone()).strftime("%H:%M %Z").to_string())
        .collect()
}

#[test]
fn a_session_is_cut_into_slots_of_its_length() {
    let tz = london();
    let (from, until) = day(&tz, date(2026, 6, 1));
    let slots = free_slots(
        &tz,
        &[rule(Weekday::Monday, "09:00", "10:00", 15)],
        &[],
        &[],
        from,
        until,
    );
    assert_eq!(
        local_times(&tz, &slots),
        ["09:00 BST", "09:15 BST", "09:30 BST", "09:45 BST"]
    );
    assert!(
        slots
            .iter()
            .all(|s| s.end.duration_since(s.start).as_mins() == 15)
    );
}

#[test]
fn clocks_going_forward_do_not_shift_a_morning_session() {
    // 2026-03-29: UK clocks go from 01:00 GMT to 02:00 BST.
    let tz = london();
    let (from, until) = day(&tz, date(2026, 3, 29));
    let slots = free_slots(
        &tz,
        &[rule(Weekday::Sunday, "09:00", "10:00", 30)],
        &[],
        &[],
        from,
        until,
    );
    assert_eq!(local_times(&tz, &slots), ["09:00 BST", "09:30 BST"]);
    assert_eq!(slots[0].start, ts("2026-03-29T08:00:00Z"));
}

#[test]
fn a_session_across_the_skipped_hour_offers_only_times_that_exist() {
    let tz = london();
    let (from, until) = day(&tz, date(2026, 3, 29));
    let slots = free_slots(
        &tz,
        &[rule(Weekday::Sunday, "00:30", "03:00", 30)],
        &[],
        &[],
        from,
        until,
    );
    // 01:00 and 01:30 do not exist that night; nothing is moved into another hour.
    assert_eq!(local_times(&tz, &slots), ["00:30 GMT", "02:00 BST", "02:30 BST"]);
}

#[test]
fn clocks_going_back_do_not_duplicate_slots() {
    // 2026-10-25: UK clocks go from 02:00 BST back to 01:00 GMT, so 01:00–02:00 happens twice.
    let tz = london();
    let (from, until) = day(&tz, date(2026, 10, 25));
    let slots = free_slots(
        &tz,
        &[rule(Weekday::Sunday, "00:30", "02:30", 30)],
        &[],
        &[],
        from,
        until,
    );
    let starts: Vec<_> = slots.iter().map(|s| s.start).collect();
    let mut unique = starts.clone();
    unique.dedup();
    assert_eq!(starts, unique);
    for pair in slots.windows(2) {
        assert!(pair[0].end <= pair[1].start, "{pair:?}");
    }
    assert_eq!(
        local_times(&tz, &slots),
        ["00:30 BST", "01:00 BST", "01:30 BST", "02:00 GMT"]
    );
    let (from, until) = day(&tz, date(2026, 10, 26));
    let monday = free_slots(
        &tz,
        &[rule(Weekday::Monday, "09:00", "09:30", 30)],
        &[],
        &[],
        from,
        until,
    );
    assert_eq!(monday[0].start, ts("2026-10-26T09:00:00Z"));
}

#[test]
fn bookings_and_blocked_windows_remove_slots_and_extras_add_them() {
    let tz = TimeZone::get("America/New_York").unwrap();
    let d = date(2026, 6, 3);
    let (from, until) = day(&tz, d);
    let rules = [rule(Weekday::Wednesday, "09:00", "12:00", 30)];
    let exceptions = [
        AvailabilityException::new(d, m("10:00"), m("11:00"), ExceptionKind::Blocked).unwrap(),
        AvailabilityException::new(
            d,
            m("17:00"),
            m("17:20"),
            ExceptionKind::Extra {
                slot: SlotLength::try_from(10).unwrap(),
                kinds: KindsOffered::Video,
            },
        )
        .unwrap(),
    ];
    let booked = [Booked {
        start_ms: ts("2026-06-03T13:00:00Z").as_millisecond(),
        end_ms: ts("2026-06-03T13:30:00Z").as_millisecond(),
    }];
    let slots = free_slots(&tz, &rules, &exceptions, &booked, from, until);
    assert_eq!(
        local_times(&tz, &slots),
        ["09:30 EDT", "11:00 EDT", "11:30 EDT", "17:00 EDT", "17:10 EDT"]
    );
    assert_eq!(slots[3].kinds, KindsOffered::Video);
}

#[test]
fn a_day_of_leave_blocks_every_slot() {
    let tz = london();
    let d = date(2026, 6, 1);
    let (from, until) = day(&tz, d);
    let leave = AvailabilityException::new(
        d,
        MinuteOfDay::MIDNIGHT,
        MinuteOfDay::END_OF_DAY,
        ExceptionKind::Blocked,
    )
    .unwrap();
    let slots = free_slots(
        &tz,
        &[rule(Weekday::Monday, "09:00", "17:00", 10)],
        &[leave],
        &[],
        from,
        until,
    );
    assert!(slots.is_empty());
}

#[test]
fn rules_outside_their_dates_offer_nothing() {
    let tz = london();
    let mut r = rule(Weekday::Monday, "09:00", "10:00", 30);
    r.valid_from = date(2026, 7, 1);
    let (from, until) = day(&tz, date(2026, 6, 1));
    assert!(free_slots(&tz, &[r], &[], &[], from, until).is_empty());
}

#[test]
fn bad_rules_are_refused_with_reasons() {
    assert!(matches!(
        "9:00".parse::<MinuteOfDay>(),
        Err(AvailabilityError::TimeOfDay(_))
    ));
    assert!(matches!(
        "09:03".parse::<MinuteOfDay>(),
        Err(AvailabilityError::NotOnFiveMinutes(_))
    ));
    assert!("24:30".parse::<MinuteOfDay>().is_err());
    assert_eq!("24:00".parse::<MinuteOfDay>().unwrap(), MinuteOfDay::END_OF_DAY);
    assert!(matches!(
        SlotLength::try_from(25),
        Err(AvailabilityError::SlotLength(25))
    ));
    let slot = SlotLength::try_from(30).unwrap();
    let from = date(2026, 1, 1);
    assert!(matches!(
        AvailabilityRule::new(
            Weekday::Monday,
            m("10:00"),
            m("09:00"),
            slot,
            KindsOffered::Audio,
            from,
            None
        ),
        Err(AvailabilityError::EndsBeforeStart { .. })
    ));
    assert!(matches!(
        AvailabilityRule::new(
            Weekday::Monday,
            m("09:00"),
            m("09:20"),
            slot,
            KindsOffered::Audio,
            from,
            None
        ),
        Err(AvailabilityError::ShorterThanSlot { .. })
    ));
    assert!(matches!(
        AvailabilityRule::new(
            Weekday::Monday,
            m("09:00"),
            m("10:00"),
            slot,
            KindsOffered::Audio,
            from,
            Some(date(2025, 1, 1))
        ),
        Err(AvailabilityError::UntilBeforeFrom { .. })
    ));
    assert!(weekday_from_number(0).is_err());
    assert_eq!(weekday_from_number(7).unwrap(), Weekday::Sunday);
}

#[test]
fn overlapping_rules_are_refused() {
    let existing = [rule(Weekday::Monday, "09:00", "12:00", 15)];
    assert!(matches!(
        rule(Weekday::Monday, "11:30", "13:00", 15).check_against(&existing),
        Err(AvailabilityError::Overlaps { .. })
    ));
    assert!(
        rule(Weekday::Monday, "12:00", "13:00", 15)
            .check_against(&existing)
            .is_ok()
    );
    assert!(
        rule(Weekday::Tuesday, "09:00", "12:00", 15)
            .check_against(&existing)
            .is_ok()
    );
    let mut later = rule(Weekday::Monday, "09:00", "12:00", 15);
    later.valid_from = date(2026, 3, 1);
    let mut ended = existing[0].clone();
    ended.valid_until = Some(date(2026, 2, 28));
    assert!(later.check_against(&[ended]).is_ok());
}

#[test]
fn appointment_states_move_only_forward() {
    use AppointmentStatus::*;
    let allowed = [
        (Booked, CheckedIn),
        (Booked, Cancelled),
        (Booked, NoShow),
        (CheckedIn, InConsultation),
        (CheckedIn, Cancelled),
        (CheckedIn, NoShow),
        (InConsultation, Completed),
    ];
    for from in AppointmentStatus::ALL {
        assert_eq!(from.as_str().parse::<AppointmentStatus>().unwrap(), from);
        for to in AppointmentStatus::ALL {
            assert_eq!(
                from.transition(to).is_ok(),
                allowed.contains(&(from, to)),
                "{from} -> {to}"
            );
        }
    }
}

#[test]
fn cutoff_and_check_in_window() {
    let start = 10 * 3_600_000;
    let end = start + 15 * 60_000;
    assert!(within_cutoff(start - 120 * 60_000, start, 120).is_ok());
    assert_eq!(
        within_cutoff(start - 119 * 60_000, start, 120),
        Err(ChangeRefused::PastCutoff { minutes: 120 })
    );
    assert!(check_in_open(start - 11 * 60_000, start, end).is_err());
    assert!(check_in_open(start - 10 * 60_000, start, end).is_ok());
    assert!(check_in_open(end - 1, start, end).is_ok());
    assert!(check_in_open(end, start, end).is_err());
}

#[test]
fn units_cover_an_appointment_exactly() {
    assert_eq!(
        units(0, 15 * 60_000).collect::<Vec<_>>(),
        [0, UNIT_MS, 2 * UNIT_MS]
    );
    assert_eq!(units(UNIT_MS + 1, 2 * UNIT_MS).collect::<Vec<_>>(), [UNIT_MS]);
}

fn zones() -> impl Strategy<Value = TimeZone> {
    prop::sample::select(vec![
        "Europe/London",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "Pacific/Chatham",
        "UTC",
    ])
    .prop_map(|name| TimeZone::get(name).unwrap())
}

prop_compose! {
    fn any_rule()(weekday in 1i64..=7, start in 0i64..288, len in 1i64..=48, slot in prop::sample::select(vec![10i64, 15, 20, 30]))
        -> Option<AvailabilityRule> {
        let end = (start + len) * 5;
        let end = MinuteOfDay::new(end.min(1440)).ok()?;
        AvailabilityRule::new(
            weekday_from_number(weekday).ok()?,
            MinuteOfDay::new(start * 5).ok()?,
            end,
            SlotLength::try_from(slot).ok()?,
            KindsOffered::Either,
            date(2026, 1, 1),
            None,
        ).ok()
    }
}

proptest! {
    /// Whatever the zone, rules and dates (daylight-saving days included), slots are unique, sorted,
    /// never overlap, last their length, sit on five-minute marks and fall in the window asked for.
    #[test]
    fn slots_never_overlap_or_repeat(
        tz in zones(),
        rules in prop::collection::vec(any_rule(), 0..6),
        day_offset in 0i64..365,
    ) {
        let rules: Vec<_> = rules.into_iter().flatten().collect();
        let from = date(2026, 1, 1).checked_add(jiff::Span::new().days(day_offset)).unwrap();
        let (from, _) = day(&tz, from);
        let until = from.checked_add(jiff::SignedDuration::from_hours(72)).unwrap();
        let slots = free_slots(&tz, &rules, &[], &[], from, until);
        for pair in slots.windows(2) {
            prop_assert!(pair[0].end <= pair[1].start, "{:?}", pair);
        }
        for s in &slots {
            prop_assert!(from <= s.start && s.start < until);
            prop_assert_eq!(s.start.as_millisecond() % UNIT_MS, 0);
            let minutes = s.end.duration_since(s.start).as_mins();
            prop_assert!([10, 15, 20, 30].contains(&minutes));
        }
    }
}

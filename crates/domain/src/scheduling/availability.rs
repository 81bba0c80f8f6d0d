//! Weekly availability, exceptions to it, and the free slots that follow.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::appointment::ConsultationKind;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvailabilityError {
    #[error("slot length must be 10, 15, 20 or 30 minutes, not {0}")]
    SlotLength(i64),
    #[error("{0:?} is not a time of day: use HH:MM, from 00:00 to 24:00")]
    TimeOfDay(String),
    #[error("times must fall on five-minute marks, such as 09:05; {0} does not")]
    NotOnFiveMinutes(MinuteOfDay),
    #[error("a session must end after it starts ({start} to {end})")]
    EndsBeforeStart { start: MinuteOfDay, end: MinuteOfDay },
    #[error("a session from {start} to {end} is shorter than one {slot}-minute slot")]
    ShorterThanSlot {
        start: MinuteOfDay,
        end: MinuteOfDay,
        slot: i64,
    },
    #[error("weekday must be 1 (Monday) to 7 (Sunday), not {0}")]
    Weekday(i64),
    #[error("the rule would stop ({until}) before it starts ({from})")]
    UntilBeforeFrom { from: Date, until: Date },
    #[error(
        "this overlaps the existing {weekday:?} session from {start} to {end}: change or remove that one first"
    )]
    Overlaps {
        weekday: Weekday,
        start: MinuteOfDay,
        end: MinuteOfDay,
    },
    #[error("consultation kinds must be video, audio or either, not {0:?}")]
    Kinds(String),
}

/// How long each slot in a session lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct SlotLength(u8);

impl SlotLength {
    pub fn minutes(self) -> i64 {
        i64::from(self.0)
    }
}

impl TryFrom<i64> for SlotLength {
    type Error = AvailabilityError;

    fn try_from(minutes: i64) -> Result<Self, Self::Error> {
        match minutes {
            10 | 15 | 20 | 30 => Ok(SlotLength(minutes as u8)),
            _ => Err(AvailabilityError::SlotLength(minutes)),
        }
    }
}

impl From<SlotLength> for i64 {
    fn from(s: SlotLength) -> i64 {
        s.minutes()
    }
}

/// A local time of day on a five-minute mark, as minutes after midnight; 24:00 (1440) closes a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MinuteOfDay(u16);

impl MinuteOfDay {
    pub const MIDNIGHT: MinuteOfDay = MinuteOfDay(0);
    pub const END_OF_DAY: MinuteOfDay = MinuteOfDay(1440);

    pub fn new(minutes: i64) -> Result<MinuteOfDay, AvailabilityError> {
        if !(0..=1440).contains(&minutes) {
            return Err(AvailabilityError::TimeOfDay(minutes.to_string()));
        }
        let m = MinuteOfDay(minutes as u16);
        if minutes % 5 != 0 {
            return Err(AvailabilityError::NotOnFiveMinutes(m));
        }
        Ok(m)
    }

    pub fn minutes(self) -> i64 {
        i64::from(self.0)
    }
}

impl FromStr for MinuteOfDay {
    type Err = AvailabilityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AvailabilityError::TimeOfDay(s.to_owned());
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        if !(0..60).contains(&m) || !(0..=24).contains(&h) || h == 24 && m != 0 {
            return Err(bad());
        }
        MinuteOfDay::new(h * 60 + m)
    }
}

impl fmt::Display for MinuteOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for MinuteOfDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MinuteOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which kinds of consultation a session offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindsOffered {
    Video,
    Audio,
    Either,
}

impl KindsOffered {
    pub fn offers(self, kind: ConsultationKind) -> bool {
        match self {
            KindsOffered::Either => true,
            KindsOffered::Video => kind == ConsultationKind::Video,
            KindsOffered::Audio => kind == ConsultationKind::Audio,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KindsOffered::Video => "video",
            KindsOffered::Audio => "audio",
            KindsOffered::Either => "either",
        }
    }
}

impl FromStr for KindsOffered {
    type Err = AvailabilityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "video" => Ok(KindsOffered::Video),
            "audio" => Ok(KindsOffered::Audio),
            "either" => Ok(KindsOffered::Either),
            _ => Err(AvailabilityError::Kinds(s.to_owned())),
        }
    }
}

/// A weekly recurring session: every `weekday` from `start` to `end` local time, cut into slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvailabilityRule {
    pub weekday: Weekday,
    pub start: MinuteOfDay,
    pub end: MinuteOfDay,
    pub slot: SlotLength,
    pub kinds: KindsOffered,
    pub valid_from: Date,
    pub valid_until: Option<Date>,
}

fn check_session(start: MinuteOfDay, end: MinuteOfDay, slot: SlotLength) -> Result<(), AvailabilityError> {
    if end <= start {
        return Err(AvailabilityError::EndsBeforeStart { start, end });
    }
    if end.minutes() - start.minutes() < slot.minutes() {
        return Err(AvailabilityError::ShorterThanSlot {
            start,
            end,
            slot: slot.minutes(),
        });
    }
    Ok(())
}

/// ISO weekday number: 1 is Monday, 7 is Sunday.
pub fn weekday_from_number(n: i64) -> Result<Weekday, AvailabilityError> {
    i8::try_from(n)
        .ok()
        .and_then(|n| Weekday::from_monday_one_offset(n).ok())
        .ok_or(AvailabilityError::Weekday(n))
}

impl AvailabilityRule {
    /// A rule whose parts fit together. Whether it collides with the clinician's other rules is
    /// [`AvailabilityRule::check_against`]'s question.
    pub fn new(
        weekday: Weekday,
        start: MinuteOfDay,
        end: MinuteOfDay,
        slot: SlotLength,
        kinds: KindsOffered,
        valid_from: Date,
        valid_until: Option<Date>,
    ) -> Result<AvailabilityRule, AvailabilityError> {
        check_session(start, end, slot)?;
        if let Some(until) = valid_until
            && until < valid_from
        {
            return Err(AvailabilityError::UntilBeforeFrom {
                from: valid_from,
                until,
            });
        }
        Ok(AvailabilityRule {
            weekday,
            start,
            end,
            slot,
            kinds,
            valid_from,
            valid_until,
        })
    }

    pub fn weekday_number(&self) -> i64 {
        i64::from(self.weekday.to_monday_one_offset())
    }

    fn applies_on(&self, date: Date) -> bool {
        date.weekday() == self.weekday
            && self.valid_from <= date
            && self.valid_until.is_none_or(|until| date <= until)
    }

    /// Two rules overlap when some day has both and their hours meet.
    pub fn overlaps(&self, other: &AvailabilityRule) -> bool {
        let dates_meet = self.valid_until.is_none_or(|u| other.valid_from <= u)
            && other.valid_until.is_none_or(|u| self.valid_from <= u);
        self.weekday == other.weekday && dates_meet && self.start < other.end && other.start < self.end
    }

    /// Refuses a rule that overlaps one of `existing`: overlapping sessions would offer one time twice.
    pub fn check_against(&self, existing: &[AvailabilityRule]) -> Result<(), AvailabilityError> {
        match existing.iter().find(|r| self.overlaps(r)) {
            Some(r) => Err(AvailabilityError::Overlaps {
                weekday: r.weekday,
                start: r.start,
                end: r.end,
            }),
            None => Ok(()),
        }
    }
}

/// What an exception does on its day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionKind {
    /// Leave or a blocked afternoon: no slots in the window.
    Blocked,
    /// An extra session on top of the weekly ones.
    Extra { slot: SlotLength, kinds: KindsOffered },
}

/// A one-day change to the weekly pattern, in local time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvailabilityException {
    pub date: Date,
    pub start: MinuteOfDay,
    pub end: MinuteOfDay,
    pub kind: ExceptionKind,
}

impl AvailabilityException {
    pub fn new(
        date: Date,
        start: MinuteOfDay,
        end: MinuteOfDay,
        kind: ExceptionKind,
    ) -> Result<AvailabilityException, AvailabilityError> {
        match kind {
            ExceptionKind::Blocked if end <= start => {
                return Err(AvailabilityError::EndsBeforeStart { start, end });
            }
            ExceptionKind::Blocked => {}
            ExceptionKind::Extra { slot, .. } => check_session(start, end, slot)?,
        }
        Ok(AvailabilityException {
            date,
            start,
            end,
            kind,
        })
    }
}

/// A time already taken by a live appointment, in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Booked {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A bookable time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub start: Timestamp,
    pub end: Timestamp,
    pub kinds: KindsOffered,
}

impl Slot {
    fn overlaps_ms(&self, start_ms: i64, end_ms: i64) -> bool {
        self.start.as_millisecond() < end_ms && start_ms < self.end.as_millisecond()
    }
}

/// The instant a local time names. A time skipped by a clock change names none (no slot is made there,
/// rather than one moved to another hour); a time that happens twice names its first occurrence only.
fn local_instant(tz: &TimeZone, date: Date, at: MinuteOfDay) -> Option<Timestamp> {
    let (date, minutes) = if at == MinuteOfDay::END_OF_DAY {
        (date.tomorrow().ok()?, 0)
    } else {
        (date, at.minutes())
    };
    let datetime = date.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0);
    let ambiguous = tz.to_ambiguous_zoned(datetime);
    match ambiguous.offset() {
        AmbiguousOffset::Gap { .. } => None,
        AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => {
            ambiguous.earlier().ok().map(|z| z.timestamp())
        }
    }
}

/// An instant for a window edge, for blocking: a skipped time counts as the moment the clock jumps.
fn window_edge(tz: &TimeZone, date: Date, at: MinuteOfDay) -> Option<Timestamp> {
    let (date, minutes) = if at == MinuteOfDay::END_OF_DAY {
        (date.tomorrow().ok()?, 0)
    } else {
        (date, at.minutes())
    };
    let datetime = date.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0);
    tz.to_ambiguous_zoned(datetime)
        .compatible()
        .ok()
        .map(|z| z.timestamp())
}

fn session_slots(
    tz: &TimeZone,
    date: Date,
    start: MinuteOfDay,
    end: MinuteOfDay,
    slot: SlotLength,
    kinds: KindsOffered,
    out: &mut Vec<Slot>,
) {
    let length = SignedDuration::from_mins(slot.minutes());
    let mut at = start.minutes();
    while at + slot.minutes() <= end.minutes() {
        // Built from the local start plus an absolute length, so a slot spanning a clock change still
        // lasts its length and never meets the next one.
        if let Some(begins) = MinuteOfDay::new(at).ok().and_then(|m| local_instant(tz, date, m))
            && let Ok(ends) = begins.checked_add(length)
        {
            out.push(Slot {
                start: begins,
                end: ends,
                kinds,
            });
        }
        at += slot.minutes();
    }
}

/// The free slots of one clinician that start in `[from, until)`: weekly rules plus extra sessions, less
/// blocked windows and times already booked. Sorted by start, and no two overlap.
pub fn free_slots(
    tz: &TimeZone,
    rules: &[AvailabilityRule],
    exceptions: &[AvailabilityException],
    booked: &[Booked],
    from: Timestamp,
    until: Timestamp,
) -> Vec<Slot> {
    if until <= from {
        return Vec::new();
    }
    // A day's slots can start before its date in UTC or after it, so look one local day further each way.
    let (Ok(first), Ok(last)) = (
        from.to_zoned(tz.clone()).date().yesterday(),
        until.to_zoned(tz.clone()).date().tomorrow(),
    ) else {
        return Vec::new();
    };
    let mut candidates = Vec::new();
    let mut blocked = Vec::new();
    let mut date = first;
    while date <= last {
        for rule in rules.iter().filter(|r| r.applies_on(date)) {
            session_slots(
                tz,
                date,
                rule.start,
                rule.end,
                rule.slot,
                rule.kinds,
                &mut candidates,
            );
        }
        for exception in exceptions.iter().filter(|e| e.date == date) {
            match exception.kind {
                ExceptionKind::Extra { slot, kinds } => session_slots(
                    tz,
                    date,
                    exception.start,
                    exception.end,
                    slot,
                    kinds,
                    &mut candidates,
                ),
                ExceptionKind::Blocked => {
                    if let (Some(s), Some(e)) = (
                        window_edge(tz, date, exception.start),
                        window_edge(tz, date, exception.end),
                    ) {
                        blocked.push((s.as_millisecond(), e.as_millisecond()));
                    }
                }
            }
        }
        match date.tomorrow() {
            Ok(next) => date = next,
            Err(_) => break,
        }
    }
    candidates.sort_by_key(|s| (s.start, s.end));
    let mut free: Vec<Slot> = Vec::new();
    for slot in candidates {
        let in_range = from <= slot.start && slot.start < until;
        let taken = booked.iter().any(|b| slot.overlaps_ms(b.start_ms, b.end_ms))
            || blocked.iter().any(|&(s, e)| slot.overlaps_ms(s, e));
        // An extra session laid over a weekly one offers only the earlier of two overlapping slots.
        let clashes = free.last().is_some_and(|prev| slot.start < prev.end);
        if in_range && !taken && !clashes {
            free.push(slot);
        }
    }
    free
}

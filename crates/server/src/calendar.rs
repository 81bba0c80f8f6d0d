//! iCalendar (RFC 5545) invitations for appointments, sent as iMIP (RFC 6047) email attachments so that
//! calendar clients add, move or remove the event.

use icalendar::{Calendar, Component, Event, EventStatus, Property};
use jiff::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Request,
    Cancel,
}

impl Method {
    /// The `METHOD` value, also used as the `method` parameter of the email part's content type.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Request => "REQUEST",
            Method::Cancel => "CANCEL",
        }
    }
}

pub struct Invite<'a> {
    /// Stable per appointment, e.g. `<appointment uuid>@confide`: clients match updates by it.
    pub uid: &'a str,
    /// Bumped on every reschedule or cancellation; clients ignore anything not newer than what they hold.
    pub sequence: u32,
    pub method: Method,
    pub start: Timestamp,
    pub end: Timestamp,
    /// `DTSTAMP`: the injected clock's now.
    pub stamp: Timestamp,
    pub summary: &'a str,
    pub description: &'a str,
    pub url: Option<&'a str>,
    /// (name, email)
    pub organizer: (&'a str, &'a str),
    /// (name, email)
    pub attendee: (&'a str, &'a str),
}

/// Renders `invite` as a VCALENDAR with one VEVENT, with CRLF line endings and folded lines.
pub fn render(invite: &Invite) -> String {
    let (organizer_name, organizer_email) = invite.organizer;
    let (attendee_name, attendee_email) = invite.attendee;
    let status = match invite.method {
        Method::Request => EventStatus::Confirmed,
        Method::Cancel => EventStatus::Cancelled,
    };
    let mut event = Event::new();
    // Every property is set explicitly: icalendar fills a missing DTSTAMP from the system clock and a
    // missing UID at random, and takes chrono types, so times are written here in UTC ("…Z") form.
    event
        .uid(&text(invite.uid))
        .sequence(invite.sequence)
        .add_property("DTSTAMP", utc(invite.stamp))
        .add_property("DTSTART", utc(invite.start))
        .add_property("DTEND", utc(invite.end))
        .summary(&text(invite.summary))
        .description(&text(invite.description))
        .append_property(
            Property::new("ORGANIZER", mailto(organizer_email))
                .add_parameter("CN", &param(organizer_name))
                .done(),
        )
        .append_multi_property(
            Property::new("ATTENDEE", mailto(attendee_email))
                .add_parameter("CN", &param(attendee_name))
                .add_parameter("ROLE", "REQ-PARTICIPANT")
                .done(),
        )
        .status(status);
    if let Some(url) = invite.url {
        event.url(&strip_controls(url));
    }
    let mut calendar = Calendar::empty();
    calendar
        .append_property(("PRODID", "-//Confide//Confide//EN"))
        .append_property(("VERSION", "2.0"))
        .append_property(("METHOD", invite.method.as_str()))
        .push(event.done());
    calendar.to_string()
}

fn utc(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

fn mailto(email: &str) -> String {
    format!("mailto:{}", strip_controls(email))
}

/// A TEXT value before icalendar escapes it: icalendar escapes `\n` but passes a CR through, which would
/// end the content line early, and RFC 5545 allows no other control character but tab.
fn text(value: &str) -> String {
    value
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect()
}

/// A parameter value (a name in `CN`): icalendar quotes one holding `:;,`, but a value can hold neither a
/// double quote nor a control character at all.
fn param(value: &str) -> String {
    value.chars().filter(|&c| c != '"' && !c.is_control()).collect()
}

/// URI values are not escaped, so a line break in one would inject properties.
fn strip_controls(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn invite(method: Method, sequence: u32) -> Invite<'static> {
        Invite {
            uid: "0190c7f4-5b1e-7d2a-9c3e-2f4a6b8c0d1e@confide",
            sequence,
            method,
            start: ts("2026-03-02T09:30:00Z"),
            end: ts("2026-03-02T09:45:00Z"),
            stamp: ts("2026-02-20T14:03:07Z"),
            summary: "Video appointment with Dr Amara Okafor",
            description: "Your appointment with Dr Amara Okafor at Riverside Surgery. Join from the link a few \
                          minutes before it starts.",
            url: Some("https://confide.example/appointments/0190c7f4-5b1e-7d2a-9c3e-2f4a6b8c0d1e"),
            organizer: ("Riverside Surgery", "no-reply@confide.example"),
            attendee: ("Sam Patient", "sam@example.org"),
        }
    }

    /// Snapshots hold `\n` so that they read (and diff) as text; `lines_end_in_crlf_and_fold` checks CRLF.
    fn lf(s: &str) -> String {
        s.replace("\r\n", "\n")
    }

    #[test]
    fn request_snapshot() {
        insta::assert_snapshot!("request", lf(&render(&invite(Method::Request, 0))));
    }

    #[test]
    fn cancel_snapshot() {
        insta::assert_snapshot!("cancel", lf(&render(&invite(Method::Cancel, 2))));
    }

    #[test]
    fn lines_end_in_crlf_and_fold_within_75_octets() {
        let mut i = invite(Method::Request, 0);
        // Multi-byte characters must not be split, and the limit counts octets, not characters.
        let description = "Bring your repeat prescription — Überweisung, né, 处方 ".repeat(4);
        i.description = &description;
        let out = render(&i);
        assert!(out.ends_with("END:VCALENDAR\r\n"));
        assert!(!out.replace("\r\n", "").contains(['\r', '\n']), "a bare CR or LF");
        let lines: Vec<&str> = out.trim_end_matches("\r\n").split("\r\n").collect();
        assert!(
            lines.iter().all(|l| l.len() <= 75),
            "a line over 75 octets: {lines:#?}"
        );
        assert!(
            lines.iter().filter(|l| l.starts_with(' ')).count() > 3,
            "the long description was not folded"
        );
        let parsed: Calendar = out.parse().unwrap();
        let event = parsed.events().next().unwrap();
        assert_eq!(event.get_description(), Some(description.as_str()));
    }

    #[test]
    fn parses_back_with_uid_sequence_and_method() {
        for (method, sequence, status) in [
            (Method::Request, 0, EventStatus::Confirmed),
            (Method::Cancel, 3, EventStatus::Cancelled),
        ] {
            let out = render(&invite(method, sequence));
            let parsed: Calendar = out.parse().unwrap();
            assert_eq!(parsed.property_value("METHOD"), Some(method.as_str()));
            assert_eq!(parsed.property_value("PRODID"), Some("-//Confide//Confide//EN"));
            let events: Vec<&Event> = parsed.events().collect();
            assert_eq!(events.len(), 1);
            let event = events[0];
            assert_eq!(
                event.get_uid(),
                Some("0190c7f4-5b1e-7d2a-9c3e-2f4a6b8c0d1e@confide")
            );
            assert_eq!(event.get_sequence(), Some(sequence));
            assert_eq!(event.get_status(), Some(status));
            assert_eq!(event.property_value("DTSTART"), Some("20260302T093000Z"));
            assert_eq!(event.property_value("DTSTAMP"), Some("20260220T140307Z"));
            // The long description comes back whole: folding was undone.
            assert_eq!(
                event.get_description(),
                Some(invite(method, sequence).description)
            );
        }
    }

    #[test]
    fn text_and_names_are_escaped() {
        let mut i = invite(Method::Request, 0);
        i.summary = "Review; bloods, BP\\ECG";
        i.description = "Line one,\r\nline two; bring: meds\nend\u{7}";
        i.attendee = ("Okafor, Amara \"Mara\"", "amara@example.org");
        let out = render(&i);
        let unfolded = out.replace("\r\n ", "");
        assert!(
            unfolded.contains("\r\nSUMMARY:Review\\; bloods\\, BP\\\\ECG\r\n"),
            "{out}"
        );
        assert!(
            unfolded.contains("\r\nDESCRIPTION:Line one\\,\\nline two\\; bring: meds\\nend\r\n"),
            "{out}"
        );
        assert!(
            unfolded.contains(
                "\r\nATTENDEE;CN=\"Okafor, Amara Mara\";ROLE=REQ-PARTICIPANT:mailto:amara@example.org\r\n"
            ),
            "{out}"
        );

        let parsed: Calendar = out.parse().unwrap();
        let event = parsed.events().next().unwrap();
        assert_eq!(event.get_summary(), Some("Review; bloods, BP\\ECG"));
        assert_eq!(
            event.get_description(),
            Some("Line one,\nline two; bring: meds\nend")
        );
        let attendees = event.get_attendees();
        assert_eq!(attendees.len(), 1);
        assert_eq!(attendees[0].cn.as_deref(), Some("Okafor, Amara Mara"));
    }

    #[test]
    fn a_line_break_in_a_url_does_not_inject_a_property() {
        let mut i = invite(Method::Request, 0);
        i.url = Some("https://confide.example/a\r\nSTATUS:CANCELLED");
        let out = render(&i);
        assert!(!out.contains("\r\nSTATUS:CANCELLED"), "{out}");
    }
}

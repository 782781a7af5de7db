//! The `mask` processor's check, run by a receiver inside its validation walk.
//!
//! Nearly every request holds nothing to mask, and walking each one a second time to learn that costs about as
//! much as the receiver's own validation walk. So the processor declares a [`MaskCheck`] (a
//! [`crate::pipeline::precheck::Precheck`]), and the receivers in front of it show each request's content to a
//! [`MaskPrecheck`] while they validate it ([`vigil_proto::otlp::scan::scan_inspecting`]). A request in which
//! nothing may change carries the check on its chunk ([`crate::pipeline::Chunk::prechecked`]) and the processor
//! passes it on without walking it; anything flagged is walked and masked as before.

use vigil::mask::{ChangeCheck, Masker};
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::scan::{Inspector, Interest, ScanError, Summary, scan_inspecting};

use crate::pipeline::precheck::Precheck;

use super::wire::{KeyClass, KeyClasses, SCANNED_INTEGER};

/// The check of one masking engine, declared by a `mask` processor.
pub struct MaskCheck(pub Masker);

impl Precheck for MaskCheck {
    fn scan(&self, signal: Signal, request: &[u8]) -> Result<Summary, ScanError> {
        scan_inspecting(signal, request, &mut MaskPrecheck::new(&self.0))
    }

    fn name(&self) -> &'static str {
        "mask"
    }
}

/// Decides, value by value, whether masking could change a request: the same decisions as
/// [`super::wire::mask_request`] makes, without making any change.
pub struct MaskPrecheck<'m, 'b> {
    masker: &'m Masker,
    keys: KeyClasses<'b>,
    /// Strings are checked in groups: most are short, and one classification serves several.
    strings: ChangeCheck<'m>,
}

impl<'m> MaskPrecheck<'m, '_> {
    /// A check against `masker`, for one request.
    pub fn new(masker: &'m Masker) -> Self {
        MaskPrecheck {
            masker,
            keys: KeyClasses::new(),
            strings: ChangeCheck::new(masker),
        }
    }
}

impl<'b> Inspector<'b> for MaskPrecheck<'_, 'b> {
    #[inline]
    fn key(&mut self, key: &'b [u8]) -> Interest {
        match self.keys.class(self.masker, key) {
            KeyClass::Allowed => Interest::Ignore,
            KeyClass::Sensitive => Interest::Flag,
            KeyClass::Plain => Interest::Content,
        }
    }

    #[inline]
    fn text(&mut self, text: &'b [u8]) -> bool {
        self.strings.add(text)
    }

    fn integer(&mut self, value: i64) -> bool {
        value.unsigned_abs() >= SCANNED_INTEGER
            && self.masker.may_change(value.to_string().as_bytes())
    }

    fn entry_done(&mut self) -> bool {
        self.strings.finish()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use vigil::mask::{MaskConfig, Masker};
    use vigil_proto::otlp::Signal;
    use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, KeyValueList, any_value::Value};
    use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use vigil_proto::otlp::scan::scan_inspecting;

    use super::MaskPrecheck;
    use crate::processor::mask::wire::{Outcome, mask_request};

    fn value(value: Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(value) })
    }

    fn text(text: &str) -> Value {
        Value::StringValue(text.into())
    }

    fn attribute(key: &str, inner: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value(inner),
            ..Default::default()
        }
    }

    fn nested(entries: Vec<KeyValue>) -> Value {
        Value::KvlistValue(KeyValueList { values: entries })
    }

    /// One resource entry per case, each holding one log record with `body` and `attributes`.
    fn request(cases: &[(Option<Value>, Vec<KeyValue>)]) -> Vec<u8> {
        ExportLogsServiceRequest {
            resource_logs: cases
                .iter()
                .map(|(body, attributes)| ResourceLogs {
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![LogRecord {
                            body: body.clone().and_then(value),
                            attributes: attributes.clone(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
        .encode_to_vec()
    }

    #[test]
    fn flags_exactly_the_entries_masking_would_change() {
        let mut config = MaskConfig::default();
        config.allow_keys.push("debug.raw".into());
        let masker = Masker::new(&config).unwrap();
        let cases: Vec<(&str, bool, Option<Value>, Vec<KeyValue>)> = vec![
            (
                "clean values",
                false,
                Some(text("user logged in")),
                vec![
                    attribute("http.route", text("/api/v1/items/7")),
                    attribute("order.id", Value::IntValue(4_111_111_111_111_112)),
                ],
            ),
            (
                "e-mail in the body",
                true,
                Some(text("mail bob@example.com now")),
                vec![],
            ),
            (
                "card as an integer",
                true,
                None,
                vec![attribute("detail", Value::IntValue(4_111_111_111_111_111))],
            ),
            (
                "sensitive key, harmless value",
                true,
                None,
                vec![attribute("db.password", Value::IntValue(7))],
            ),
            (
                "allowed key hides everything under it",
                false,
                None,
                vec![attribute(
                    "debug.raw",
                    nested(vec![attribute("password", text("hunter2hunter2"))]),
                )],
            ),
            (
                "secret deep in a key-value body",
                true,
                Some(nested(vec![attribute(
                    "request",
                    nested(vec![attribute(
                        "note",
                        text("token=ghp_0123456789abcdefghijABCDEFGHIJ012345"),
                    )]),
                )])),
                vec![],
            ),
            (
                "array element under a plain key",
                true,
                None,
                vec![attribute(
                    "recipients",
                    Value::ArrayValue(vigil_proto::otlp::common::v1::ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(text("ops")),
                            },
                            AnyValue {
                                value: Some(text("alice@example.org")),
                            },
                        ],
                    }),
                )],
            ),
        ];
        let bytes = request(
            &cases
                .iter()
                .map(|(_, _, body, attributes)| (body.clone(), attributes.clone()))
                .collect::<Vec<_>>(),
        );
        let summary =
            scan_inspecting(Signal::Logs, &bytes, &mut MaskPrecheck::new(&masker)).unwrap();
        assert_eq!(summary.resources.len(), cases.len());
        for ((name, expected, body, attributes), entry) in cases.iter().zip(&summary.resources) {
            assert_eq!(entry.flagged, *expected, "{name}");
            // The processor's own walk agrees: what is not flagged is not changed.
            let alone = request(&[(body.clone(), attributes.clone())]);
            let walked = mask_request(Signal::Logs, &alone, &masker).unwrap();
            assert_eq!(walked != Outcome::Keep, *expected, "{name}: {walked:?}");
        }
    }

    #[test]
    fn a_key_sent_twice_is_judged_by_the_one_decoders_keep() {
        let masker = Masker::new(&MaskConfig::default()).unwrap();
        // Length-delimited field `tag` holding `body` (all lengths here fit one byte).
        let field = |tag: u8, body: &[u8]| [&[tag, body.len() as u8][..], body].concat();
        let value = field(0x0a, b"hunter2");
        // `detail` first, `password` last: protobuf decoders keep the last, so the value must be masked.
        let twice = [
            field(0x0a, b"detail"),
            field(0x0a, b"password"),
            field(0x12, &value),
        ]
        .concat();
        let request = field(0x0a, &field(0x12, &field(0x12, &field(0x32, &twice))));
        let summary =
            scan_inspecting(Signal::Logs, &request, &mut MaskPrecheck::new(&masker)).unwrap();
        assert!(summary.first_error().is_none());
        assert!(summary.resources[0].flagged);
        let walked = mask_request(Signal::Logs, &request, &masker).unwrap();
        assert_ne!(walked, Outcome::Keep, "the processor's walk masks it too");
    }

    #[test]
    fn user_rules_flag_every_entry_with_content() {
        let mut config = MaskConfig::default();
        config.rules.push(vigil::mask::RuleConfig {
            name: "ticket".into(),
            pattern: r"TICKET-\d+".into(),
            action: None,
        });
        let masker = Masker::new(&config).unwrap();
        let bytes = request(&[(Some(text("TICKET-42 opened")), vec![])]);
        let summary =
            scan_inspecting(Signal::Logs, &bytes, &mut MaskPrecheck::new(&masker)).unwrap();
        assert!(
            summary.resources[0].flagged,
            "a regex rule needs the text itself"
        );
    }
}

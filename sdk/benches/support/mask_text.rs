//! The masking benchmarks' inputs and baseline, shared by `mask` (criterion) and `mask_interleaved`.

use std::borrow::Cow;

use regex::Regex;

/// Log lines as services and training jobs write them: timestamps, ids, versions, numbers, paths.
pub const CLEAN: &[&str] = &[
    "2024-01-15T10:30:00.123Z INFO request completed method=GET path=/api/v1/users/12345/orders status=200 duration_ms=12.5",
    "epoch 12 finished: loss=0.2345 accuracy=0.9512 lr=3e-4 samples_per_sec=1523.7 gpu_mem_mb=10240",
    "request 550e8400-e29b-41d4-a716-446655440000 trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
    "connected to postgres database prod (pool size 20, timeout 30s) using driver tokio-postgres 0.7.12",
    "order ORD-1234567890123456 shipped to warehouse WH-42, invoice 98765432109876, total 1234.56 EUR",
    "max_tokens=512 tokens_used=2048 prompt_tokens=300 model=gpt-style-small temperature=0.7",
    "backtest finished: trades=1532 pnl=12345.67 sharpe=1.87 max_drawdown=0.123 duration_sec=125.5",
    "cache miss for key user:profile:12345, fetching from upstream service profile-api on port 8080",
];

/// The same kind of lines, each carrying something to mask.
pub const DENSE: &[&str] = &[
    "login failed for jane.doe@example.com from 203.0.113.7 with password=hunter2",
    "charge card 4111 1111 1111 1111 for customer cus_123 via sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "GET /api/items?page=2&access_token=s3cr3tT0ken99&sort=asc from 2001:db8::8a2e:370:7334",
    "connecting to postgres://app:Sup3rS3cretPw@db.internal:5432/prod with key AKIAIOSFODNN7EXAMPLE",
];

pub fn text(lines: &[&str], bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 256);
    while out.len() < bytes {
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The built-in rules as regexes, the way one would write them without a dedicated engine.
pub fn baseline() -> Vec<Regex> {
    [
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
        r"\b(?:\d[ -]?){12,18}\d\b",
        r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
        r"\b(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{0,4}\b",
        r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
        r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}",
        r"\b(?:AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|glpat-[A-Za-z0-9_-]{20,}|xox[bpares]-[A-Za-z0-9-]{10,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{32,}|AIza[A-Za-z0-9_-]{35})",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        r#"(?i)\b(?:password|passwd|secret|token|api_key|apikey|authorization|cookie|session)\b["']?\s*[:=]\s*["']?[^\s"'&,;]+"#,
        r"://[^:/\s]+:[^@/\s]+@",
    ]
    .iter()
    .map(|r| Regex::new(r).expect("baseline regex"))
    .collect()
}

pub fn apply_baseline<'a>(rules: &[Regex], text: &'a str) -> Cow<'a, str> {
    let mut current = Cow::Borrowed(text);
    for rule in rules {
        if let Cow::Owned(replaced) = rule.replace_all(&current, "[REDACTED]") {
            current = Cow::Owned(replaced);
        }
    }
    current
}

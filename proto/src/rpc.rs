//! `google.rpc.Status`, the error body of OTLP/HTTP responses.

/// The `google.rpc.Status` message (details are not used by Vigil and omitted).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// A `google.rpc.Code` value.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// A developer-facing message in English.
    #[prost(string, tag = "2")]
    pub message: String,
}

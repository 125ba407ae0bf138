//! The token estimate a request reserves at admission, before any tokenizer has seen it.

/// Bytes of English-like text per token, rounded down. OpenAI's tokenizer guidance is about 4
/// characters per token for English; code and other scripts run denser, JSON punctuation
/// sparser. Rounding the bytes *up* to tokens keeps the estimate on the high side, and the
/// settlement corrects it either way.
const BYTES_PER_TOKEN: u64 = 4;

/// Tokens to reserve for a request: its prompt text (`prompt_bytes`: the UTF-8 length of the
/// message contents, tool definitions and system prompt — not the JSON around them, and not
/// base64 image data, which the server counts at a fixed price of its choosing) plus the most it
/// may generate (`output_cap`: its `max_tokens`/`max_completion_tokens`/`max_output_tokens`
/// after clamping to `max_tokens_per_request`).
pub fn estimate_tokens(prompt_bytes: usize, output_cap: u64) -> u64 {
    let bytes = u64::try_from(prompt_bytes).unwrap_or(u64::MAX);
    bytes.div_ceil(BYTES_PER_TOKEN).saturating_add(output_cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_rounds_up_and_output_cap_adds() {
        assert_eq!(estimate_tokens(0, 0), 0);
        assert_eq!(estimate_tokens(1, 0), 1);
        assert_eq!(estimate_tokens(400, 256), 356);
        assert_eq!(estimate_tokens(usize::MAX, u64::MAX), u64::MAX);
    }
}

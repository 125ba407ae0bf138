//! A number's decimal digits without `fmt`: the hot paths (header values, log lines, stream
//! events) write many small numbers, and `fmt`'s machinery costs more than the digits.

/// The decimal digits of a `u64`, on the stack.
#[derive(Clone, Copy)]
pub struct Decimal {
    digits: [u8; 20],
    at: u8,
}

/// `00` to `99`: the digits are written two at a time, one division per pair.
const PAIRS: [[u8; 2]; 100] = {
    let mut pairs = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        // Both below 10: the casts keep them.
        pairs[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    pairs
};

impl Decimal {
    pub fn new(mut n: u64) -> Self {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        while n >= 100 {
            at -= 2;
            // Below 100: the cast keeps it.
            digits[at..at + 2].copy_from_slice(&PAIRS[(n % 100) as usize]);
            n /= 100;
        }
        if n >= 10 {
            at -= 2;
            digits[at..at + 2].copy_from_slice(&PAIRS[n as usize]);
        } else {
            at -= 1;
            // Below 10: the cast keeps it.
            digits[at] = b'0' + n as u8;
        }
        // At most 20 digits: the cast keeps it.
        Decimal {
            digits,
            at: at as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[usize::from(self.at)..]
    }

    pub fn as_str(&self) -> &str {
        // ASCII digits only.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::Decimal;

    #[test]
    fn digits_are_what_display_writes() {
        let mut n = 1u64;
        let mut samples = vec![0, 9, 10, 99, 100, u64::MAX, u64::MAX - 1];
        while let Some(next) = n.checked_mul(7) {
            samples.extend([n - 1, n, n + 1]);
            n = next;
        }
        for n in samples {
            assert_eq!(Decimal::new(n).as_str(), n.to_string());
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes());
        }
    }
}

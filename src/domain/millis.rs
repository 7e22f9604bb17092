//! `Duration` at the serde edge: JSON carries milliseconds as a number (`"total_ms": 48213.7`), the
//! code carries `Duration`s. Use with `#[serde(with = "crate::domain::millis")]`.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let ms = f64::deserialize(d)?;
    Ok(from_ms(ms))
}

/// Negative, NaN and absurd values become zero or the maximum instead of a panic.
fn from_ms(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(if ms > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

/// `Option<Duration>` as milliseconds or `null`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.map(from_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "super")]
        a: Duration,
        #[serde(with = "super::option")]
        b: Option<Duration>,
    }

    #[test]
    fn round_trips_and_never_panics() {
        let t = T {
            a: Duration::from_micros(1500),
            b: None,
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"a":1.5,"b":null}"#);
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
        let odd: T = serde_json::from_str(r#"{"a":-5,"b":1e300}"#).unwrap();
        assert_eq!(odd.a, Duration::ZERO);
        assert_eq!(odd.b, Some(Duration::MAX));
    }
}

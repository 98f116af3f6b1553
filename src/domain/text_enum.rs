//! Enums stored and sent as fixed words (`"active"`, `"self-signed"`): one macro gives each
//! its `parse`, `as_str`, `ALL`, `Display`, serde and the `TryFrom<String>` the store's rows
//! decode through, so no part compares the words by hand.

/// `text_enum! { /// doc  pub enum Name { Variant = "word", ... } }`
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn parse(raw: &str) -> Result<Self, $crate::domain::Invalid> {
                match raw {
                    $($text => Ok(Self::$variant),)+
                    _ => $crate::domain::invalid(concat!("must be one of ", $crate::domain::text_enum::join!($($text),+))),
                }
            }

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::domain::Invalid;
            fn try_from(raw: String) -> Result<Self, $crate::domain::Invalid> {
                Self::parse(&raw)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&raw).map_err(|e| serde::de::Error::custom(e.0))
            }
        }
    };
}

/// `"a", "b", "c"` → `"a, b, c"`, at compile time.
macro_rules! join {
    ($first:literal $(, $rest:literal)*) => {
        concat!($first $(, ", ", $rest)*)
    };
}

pub(crate) use join;
pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    text_enum! {
        /// A test enum.
        pub enum Colour { Red = "red", DarkBlue = "dark-blue" }
    }

    #[test]
    fn words_round_trip_and_others_are_refused() {
        assert_eq!(Colour::parse("dark-blue").unwrap(), Colour::DarkBlue);
        assert_eq!(Colour::DarkBlue.to_string(), "dark-blue");
        assert_eq!(
            Colour::parse("Red").unwrap_err().0,
            "must be one of red, dark-blue"
        );
        assert_eq!(serde_json::to_string(&Colour::Red).unwrap(), "\"red\"");
        assert_eq!(
            serde_json::from_str::<Colour>("\"dark-blue\"").unwrap(),
            Colour::DarkBlue
        );
        assert!(serde_json::from_str::<Colour>("\"blue\"").is_err());
        assert!(Colour::try_from(String::from("red")).is_ok());
        assert_eq!(Colour::ALL.len(), 2);
    }
}

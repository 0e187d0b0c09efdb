//! Entity type codes, the first header byte of every entity. Bytes below
//! [`INT_POS`] are small integers: value = byte - 1.

/// Positive integer of at least 238: netbytes(value - 238) follows.
pub const INT_POS: u8 = 0xef;
/// Negative integer of at most -2: netbytes(-(value + 2)) follows.
pub const INT_NEG: u8 = 0xf0;
/// False.
pub const FALSE: u8 = 0xf1;
/// True.
pub const TRUE: u8 = 0xf2;
/// Bytes: netbytes length, payload.
pub const BYTES: u8 = 0xf3;
/// String in the context codec: implicit bytes.
pub const STRING: u8 = 0xf4;
/// String with explicit codec: implicit bytes codec, implicit bytes data.
pub const STRING_CODEC: u8 = 0xf5;
/// Tuple: netbytes count, explicit elements.
pub const TUPLE: u8 = 0xf6;
/// VException: implicit tuple of arguments.
pub const EXCEPTION: u8 = 0xf7;
/// None.
pub const NONE: u8 = 0xf8;
/// Float base 10: implicit signed digits, exponent.
pub const FLOAT_10: u8 = 0xf9;
/// Float base 2: implicit signed digits, exponent.
pub const FLOAT_2: u8 = 0xfa;
/// Float base N: implicit signed digits, base, exponent.
pub const FLOAT_N: u8 = 0xfb;
/// Reference to an object of the message's sender: implicit signed id.
pub const REF_SENDER: u8 = 0xfc;
/// Reference to an object of the message's receiver: implicit signed id.
pub const REF_RECEIVER: u8 = 0xfd;
/// Tagged value: implicit tuple (value, tag...).
pub const TAGGED: u8 = 0xfe;

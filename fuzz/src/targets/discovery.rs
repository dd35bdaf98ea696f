//! What a new member's discovery reads from outside
//! (`server/src/discovery/`): DNS responses to its SRV and A queries, and
//! a discovery service's v2 keys answers.
//!
//! Input: a selector byte; 0 (even): a DNS response to query ID 0x1234;
//! 1 (odd): two bytes of HTTP status (little endian, folded into 100..600),
//! then a keys answer body. Checks: no panic; decoded SRV targets are
//! bounded absolute names; a cluster the client accepts from a listing
//! parses back with one member per registration.

use super::{Cursor, MIB};
use crate::engine::{Outcome, Target, feature};
use cairn::fuzz_api::discovery::{dns_reply, keys_answer};

pub const TARGET: Target = Target {
    name: "discovery",
    about: "DNS SRV/A responses and v2 discovery answers as a new member reads them",
    run,
    dict: &[
        b"\x00\x21",
        b"\x00\x01",
        b"\x00\x1c",
        b"\xc0\x0c",
        b"\x81\x80",
        b"\x81\x83",
        b"{\"node\":{\"nodes\":[",
        b"{\"key\":\"/d/1\",\"value\":\"a=http://h:1\",\"createdIndex\":5}",
        b"\"value\":\"3\"",
        b"{\"errorCode\":105,\"message\":\"Key already exists\",\"cause\":\"/d\",\"index\":1}",
        b"_config",
        b"=http://",
        b",",
    ],
    max_len: 4096,
    heap_budget_bytes: 4 * MIB,
};

fn run(data: &[u8]) -> Outcome {
    let mut c = Cursor::new(data);
    if c.byte().is_multiple_of(2) {
        return match dns_reply(c.rest(), 0x1234)? {
            Ok(records) => Ok(feature(&[
                "dns",
                &records
                    .iter()
                    .map(|r| r.split(' ').next().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(","),
            ])),
            Err(why) => Ok(feature(&["dns refused", &why])),
        };
    }
    let status = 100 + c.u16() % 500;
    let outcome = keys_answer(status, c.rest())?;
    Ok(feature(&["keys", &status.to_string(), &outcome]))
}

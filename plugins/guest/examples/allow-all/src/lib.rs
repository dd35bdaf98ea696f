//! The smallest Cairn plugin: a validator that allows every write. Useful as
//! a template and to measure the cost of a plugin call itself.

use cairn_plugin_sdk::{Validator, Verdict, WriteRequest, export_validator};

struct AllowAll;

impl Validator for AllowAll {
    fn validate(_request: WriteRequest) -> Verdict {
        Verdict::Allow
    }
}

export_validator!(AllowAll);

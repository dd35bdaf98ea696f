//! Pass 3 of a build: typed fields filled in from the parsed values and
//! cross-checked with etcd's rules (timing, retention, log outputs).

use super::*;

/// The resolved and parsed values, with helpers that turn them into typed
/// fields and produce errors naming the flag and its source.
pub(super) struct Inputs {
    pub(super) resolved: BTreeMap<&'static str, Resolved>,
    pub(super) parsed: BTreeMap<&'static str, Parsed>,
}

impl Inputs {
    pub(super) fn setting(&self, name: &str) -> Result<&'static Setting, ConfigError> {
        registry::lookup(name)
            .ok_or_else(|| ConfigError::invalid(format!("internal error: no setting --{name}")))
    }

    pub(super) fn resolved(&self, name: &str) -> Result<&Resolved, ConfigError> {
        self.resolved
            .get(name)
            .ok_or_else(|| ConfigError::invalid(format!("internal error: --{name} unresolved")))
    }

    pub(super) fn explicit(&self, name: &str) -> bool {
        self.resolved
            .get(name)
            .is_some_and(|r| r.source.is_explicit())
    }

    /// Where a value in a file is, for messages about combinations of
    /// settings (empty for other sources, which those messages predate).
    pub(super) fn at(&self, name: &str) -> String {
        self.resolved
            .get(name)
            .map(|r| r.source.file_suffix())
            .unwrap_or_default()
    }

    /// A `BadValue` for the current value of `name`.
    pub(super) fn bad(&self, name: &str, expected: impl Into<String>) -> ConfigError {
        let (value, origin) = match self.resolved.get(name) {
            Some(r) => (r.raw.clone(), r.source.clone()),
            None => (String::new(), Source::Default),
        };
        ConfigError::BadValue {
            flag: format!("--{name}"),
            origin,
            value,
            expected: expected.into(),
        }
    }

    pub(super) fn parsed(&self, name: &str) -> Result<&Parsed, ConfigError> {
        self.parsed
            .get(name)
            .ok_or_else(|| ConfigError::invalid(format!("internal error: --{name} unparsed")))
    }

    pub(super) fn wrong_kind(name: &str) -> ConfigError {
        ConfigError::invalid(format!("internal error: --{name} read as the wrong kind"))
    }

    pub(super) fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        match self.parsed(name)? {
            Parsed::Bool(b) => Ok(*b),
            _ => Err(Self::wrong_kind(name)),
        }
    }

    pub(super) fn uint(&self, name: &str) -> Result<u64, ConfigError> {
        match self.parsed(name)? {
            Parsed::Uint(v) => Ok(*v),
            _ => Err(Self::wrong_kind(name)),
        }
    }

    pub(super) fn u32(&self, name: &str) -> Result<u32, ConfigError> {
        let v = self.uint(name)?;
        u32::try_from(v).map_err(|_| {
            let unit = match self.setting(name).map(|s| s.kind) {
                Ok(Kind::Uint(unit)) => unit,
                _ => "units",
            };
            self.bad(
                name,
                format!("a whole number of {unit} no larger than {}", u32::MAX),
            )
        })
    }

    pub(super) fn duration(&self, name: &str) -> Result<Duration, ConfigError> {
        match self.parsed(name)? {
            Parsed::Duration(d) => Ok(*d),
            _ => Err(Self::wrong_kind(name)),
        }
    }

    pub(super) fn text(&self, name: &str) -> Result<String, ConfigError> {
        match self.parsed(name)? {
            Parsed::Text(t) => Ok(t.clone()),
            _ => Err(Self::wrong_kind(name)),
        }
    }

    pub(super) fn list(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        match self.parsed(name)? {
            Parsed::List(items) => Ok(items.clone()),
            _ => Err(Self::wrong_kind(name)),
        }
    }

    /// A URL list, checked by the rule for its setting (see [`url_rule`]).
    pub(super) fn urls(&self, name: &str) -> Result<Vec<Url>, ConfigError> {
        parse_url_list(&self.list(name)?, url_rule(name)).map_err(|e| self.bad(name, e))
    }
}

/// What a configuration carries besides setting values.
pub(crate) struct Extras {
    pub(crate) sources: Sources,
    pub(crate) config_files: Vec<PathBuf>,
    pub(crate) plugins: toml::Table,
    /// File values that the environment or a flag overrides.
    pub(crate) shadowed: BTreeMap<&'static str, Resolved>,
}

/// Builds and validates the configuration from the merged values; the
/// first problem found is the error (see [`build_all`] for every one).
pub(crate) fn build(
    resolved: BTreeMap<&'static str, Resolved>,
    warnings: Vec<String>,
    extras: Extras,
) -> Result<ServerConfig, ConfigError> {
    build_all(resolved, warnings, extras).map_err(|errors| {
        errors.into_iter().next().unwrap_or_else(|| {
            ConfigError::invalid("internal error: validation failed without a reason")
        })
    })
}

/// [`build`], reporting every problem: each value that is wrong on its own,
/// or, when every value is fine on its own, each combination that is wrong.
/// (Combinations are not judged while a value is wrong, since a rule about
/// two settings says nothing useful when one of them is unreadable.)
pub(crate) fn build_all(
    resolved: BTreeMap<&'static str, Resolved>,
    mut warnings: Vec<String>,
    extras: Extras,
) -> Result<ServerConfig, Vec<ConfigError>> {
    // Pass 1 and 2: syntax, range, then support status, in registry order.
    let mut parsed = BTreeMap::new();
    let mut errors = Vec::new();
    for s in SETTINGS {
        let Some(r) = resolved.get(s.name) else {
            errors.push(ConfigError::invalid(format!(
                "internal error: --{} unresolved",
                s.name
            )));
            continue;
        };
        match check_value(s, &r.raw, &r.source) {
            Ok((value, warning)) => {
                warnings.extend(warning);
                parsed.insert(s.name, value);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let inputs = Inputs { resolved, parsed };
    // Pass 3. Internal errors (a setting read as the wrong kind) end it at
    // once; broken combinations are collected in `errors`.
    match typed(inputs, warnings, extras, &mut errors) {
        Ok(cfg) if errors.is_empty() => Ok(cfg),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.push(e);
            Err(errors)
        }
    }
}

/// Pass 3 of [`build_all`]: typed fields from values that are each valid,
/// and the rules about combinations of settings, whose violations go to
/// `errors` so that one broken rule does not hide the next.
// One step per ServerConfig field, in the order etcd validates them (the
// order of errors and warnings a user reads); a split would only carry
// the half-built fields from one part to the next.
#[allow(clippy::too_many_lines)]
pub(super) fn typed(
    mut inputs: Inputs,
    mut warnings: Vec<String>,
    extras: Extras,
    errors: &mut Vec<ConfigError>,
) -> Result<ServerConfig, ConfigError> {
    let name = inputs.text("name")?;
    let data_dir_text = inputs.text("data-dir")?;
    let data_dir = if data_dir_text.is_empty() {
        let derived = format!("{name}.etcd");
        set_raw(&mut inputs, "data-dir", &derived);
        PathBuf::from(derived)
    } else {
        PathBuf::from(data_dir_text)
    };

    let snapshot_count = inputs.uint("snapshot-count")?;
    let heartbeat_interval_ms = inputs.uint("heartbeat-interval")?;
    let election_timeout_ms = inputs.uint("election-timeout")?;
    errors.extend(
        check_timing(
            heartbeat_interval_ms,
            election_timeout_ms,
            &inputs.at("heartbeat-interval"),
            &inputs.at("election-timeout"),
        )
        .err(),
    );

    if inputs.bool("experimental-enable-lease-checkpoint-persist")?
        && !inputs.bool("experimental-enable-lease-checkpoint")?
    {
        errors.push(ConfigError::invalid(
            "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint",
        ));
    }

    let listen_peer_urls = inputs.urls("listen-peer-urls")?;
    let listen_client_urls = inputs.urls("listen-client-urls")?;
    let listen_metrics_urls = inputs.urls("listen-metrics-urls")?;
    let initial_advertise_peer_urls = inputs.urls("initial-advertise-peer-urls")?;
    if inputs.explicit("listen-client-urls") && !inputs.explicit("advertise-client-urls") {
        errors.push(ConfigError::invalid(format!(
            "--advertise-client-urls is required when --listen-client-urls{} is set explicitly",
            inputs.at("listen-client-urls")
        )));
    }
    let advertise_client_urls = inputs.urls("advertise-client-urls")?;

    let max_snapshots = inputs.u32("max-snapshots")?;
    let quota_backend_bytes = inputs.uint("quota-backend-bytes")?;
    if quota_backend_bytes > RECOMMENDED_MAX_QUOTA_BACKEND_BYTES {
        warnings.push(format!(
            "--quota-backend-bytes={quota_backend_bytes}{} exceeds the maximum recommended quota of {RECOMMENDED_MAX_QUOTA_BACKEND_BYTES} bytes (8 GiB)",
            inputs.at("quota-backend-bytes")
        ));
    }
    let max_txn_ops = inputs.u32("max-txn-ops")?;
    let max_request_bytes = inputs.u32("max-request-bytes")?;
    if u64::from(max_request_bytes) > RECOMMENDED_MAX_REQUEST_BYTES {
        warnings.push(format!(
            "--max-request-bytes={max_request_bytes}{} exceeds the maximum recommended size of {RECOMMENDED_MAX_REQUEST_BYTES} bytes (10 MiB)",
            inputs.at("max-request-bytes")
        ));
    }
    let max_concurrent_streams = inputs.u32("max-concurrent-streams")?;

    let initial_cluster_state = match inputs.text("initial-cluster-state")?.as_str() {
        "existing" => ClusterState::Existing,
        _ => ClusterState::New,
    };
    let bootstrap = bootstrap(&inputs, &name).unwrap_or_else(|e| {
        errors.push(e);
        Bootstrap::Static
    });
    let initial_cluster = initial_cluster(&mut inputs, &name, &initial_advertise_peer_urls)?;
    if bootstrap != Bootstrap::Static && !inputs.explicit("initial-cluster") {
        // As etcd: discovery clears the default --initial-cluster.
        set_raw(&mut inputs, "initial-cluster", "");
    }
    if initial_cluster_state == ClusterState::New && bootstrap == Bootstrap::Static {
        errors.extend(
            check_own_membership(
                &inputs,
                &name,
                &initial_cluster,
                &initial_advertise_peer_urls,
            )
            .err(),
        );
    }

    let metrics = match inputs.text("metrics")?.as_str() {
        "extensive" => MetricsLevel::Extensive,
        _ => MetricsLevel::Basic,
    };
    let log_level = if inputs.bool("debug")? {
        warnings.push("--debug is deprecated; use --log-level=debug".to_string());
        LogLevel::Debug
    } else {
        match inputs.text("log-level")?.as_str() {
            "debug" => LogLevel::Debug,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "panic" => LogLevel::Panic,
            "fatal" => LogLevel::Fatal,
            _ => LogLevel::Info,
        }
    };
    let log_outputs = log_outputs(&inputs, &mut warnings).unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });

    let auth_token = inputs.text("auth-token")?;
    let bcrypt_cost = inputs.u32("bcrypt-cost")?;

    let auto_compaction_mode = match inputs.text("auto-compaction-mode")?.as_str() {
        "revision" => AutoCompactionMode::Revision,
        _ => AutoCompactionMode::Periodic,
    };
    let auto_compaction_retention = retention(&inputs, auto_compaction_mode).unwrap_or_else(|e| {
        errors.push(e);
        AutoCompactionRetention::Disabled
    });

    let cipher_suites = cipher_suites(&inputs, &mut warnings)?;
    let https_peers = initial_cluster.iter().any(|m| is_secure(&m.peer_url));
    let client_tls = tls_side(
        &inputs,
        TlsSide::Client,
        &[
            ("listen-client-urls", &listen_client_urls),
            ("listen-metrics-urls", &listen_metrics_urls),
        ],
        false,
        &mut warnings,
        errors,
    );
    let peer_tls = tls_side(
        &inputs,
        TlsSide::Peer,
        &[("listen-peer-urls", &listen_peer_urls)],
        https_peers,
        &mut warnings,
        errors,
    );

    Ok(ServerConfig {
        name,
        data_dir,
        snapshot_count,
        heartbeat_interval_ms,
        election_timeout_ms,
        initial_election_tick_advance: inputs.bool("initial-election-tick-advance")?,
        listen_peer_urls,
        listen_client_urls,
        listen_metrics_urls,
        max_snapshots,
        quota_backend_bytes,
        max_txn_ops,
        max_request_bytes,
        max_concurrent_streams,
        grpc_keepalive_min_time: inputs.duration("grpc-keepalive-min-time")?,
        grpc_keepalive_interval: inputs.duration("grpc-keepalive-interval")?,
        grpc_keepalive_timeout: inputs.duration("grpc-keepalive-timeout")?,
        initial_advertise_peer_urls,
        initial_cluster,
        bootstrap,
        initial_cluster_token: inputs.text("initial-cluster-token")?,
        initial_cluster_state,
        advertise_client_urls,
        strict_reconfig_check: inputs.bool("strict-reconfig-check")?,
        pre_vote: inputs.bool("pre-vote")?,
        enable_v2: inputs.bool("enable-v2")?,
        enable_pprof: inputs.bool("enable-pprof")?,
        enable_ui: inputs.bool("enable-ui")?,
        wal_dir: Some(inputs.text("wal-dir")?)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        cors: dedup(inputs.list("cors")?),
        host_whitelist: dedup(inputs.list("host-whitelist")?),
        metrics,
        logger: inputs.text("logger")?,
        log_outputs,
        log_level,
        experimental_compaction_batch_limit: inputs.u32("experimental-compaction-batch-limit")?,
        experimental_warning_apply_duration: inputs
            .duration("experimental-warning-apply-duration")?,
        experimental_watch_progress_notify_interval: inputs
            .duration("experimental-watch-progress-notify-interval")?,
        experimental_initial_corrupt_check: inputs.bool("experimental-initial-corrupt-check")?,
        experimental_enable_lease_checkpoint: inputs
            .bool("experimental-enable-lease-checkpoint")?,
        experimental_enable_lease_checkpoint_persist: inputs
            .bool("experimental-enable-lease-checkpoint-persist")?,
        enable_grpc_gateway: inputs.bool("enable-grpc-gateway")?,
        experimental_enable_v2v3: inputs.text("experimental-enable-v2v3")?,
        experimental_corrupt_check_time: inputs.duration("experimental-corrupt-check-time")?,
        force_new_cluster: inputs.bool("force-new-cluster")?,
        auth_token,
        bcrypt_cost,
        auth_token_ttl_secs: inputs.uint("auth-token-ttl")?,
        auto_compaction_mode,
        auto_compaction_retention,
        client_tls,
        peer_tls,
        cipher_suites,
        config_files: extras.config_files,
        plugins: extras.plugins,
        warnings,
        provenance: inputs.resolved,
        sources: extras.sources,
        shadowed: extras.shadowed,
    })
}

/// `--auto-compaction-retention` read by mode, as etcd does: periodic takes
/// hours or a duration, revision takes a count; zero or empty disables.
pub(super) fn retention(
    inputs: &Inputs,
    mode: AutoCompactionMode,
) -> Result<AutoCompactionRetention, ConfigError> {
    const FLAG: &str = "auto-compaction-retention";
    let raw = inputs.text(FLAG)?;
    if raw.is_empty() {
        return Ok(AutoCompactionRetention::Disabled);
    }
    let number = decimal(&raw);
    let retention = match mode {
        AutoCompactionMode::Periodic => {
            let period = match number {
                Some(hours) if hours > MAX_RETENTION_HOURS => {
                    return Err(inputs.bad(FLAG, format!("at most {MAX_RETENTION_HOURS} hours")));
                }
                Some(hours) => Duration::from_secs(hours * 3600),
                None => parse_go_duration(&raw)
                    .map_err(|e| inputs.bad(FLAG, format!("{RETENTION_EXPECTED} ({e})")))?,
            };
            if period.is_zero() {
                AutoCompactionRetention::Disabled
            } else {
                AutoCompactionRetention::Period(period)
            }
        }
        AutoCompactionMode::Revision => match number {
            Some(0) => AutoCompactionRetention::Disabled,
            Some(revisions) => AutoCompactionRetention::Revisions(revisions),
            None => {
                return Err(inputs.bad(
                    FLAG,
                    format!(
                        "a number of revisions such as 1000, because --auto-compaction-mode{} is revision",
                        inputs.at("auto-compaction-mode")
                    ),
                ));
            }
        },
    };
    Ok(retention)
}

/// Records a derived default so provenance shows the value in force.
pub(super) fn set_raw(inputs: &mut Inputs, name: &'static str, raw: &str) {
    if let Some(r) = inputs.resolved.get_mut(name) {
        r.raw = raw.to_string();
    }
}

/// etcd's rule relating the two timing settings, with etcd's wording (each
/// one's own range is checked with the value). `hb_at` and `el_at` locate
/// values that came from a file.
pub(super) fn check_timing(
    heartbeat_ms: u64,
    election_ms: u64,
    hb_at: &str,
    el_at: &str,
) -> Result<(), ConfigError> {
    if heartbeat_ms.saturating_mul(5) > election_ms {
        return Err(ConfigError::invalid(format!(
            "--election-timeout[{election_ms}ms]{el_at} should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]{hb_at}"
        )));
    }
    Ok(())
}

/// `--log-outputs`, or the deprecated `--log-output` when only that is set.
pub(super) fn log_outputs(
    inputs: &Inputs,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    let mut flag = "log-outputs";
    if inputs.explicit("log-output") {
        warnings.push("--log-output is deprecated; use --log-outputs".to_string());
        if !inputs.explicit("log-outputs") {
            flag = "log-output";
        }
    }
    let outputs = inputs.list(flag)?;
    if outputs.is_empty() {
        return Err(inputs.bad(flag, one_of(&LOG_OUTPUTS)));
    }
    Ok(dedup(outputs))
}

/// Drops repeated items, keeping the first (etcd keeps these as sets).
pub(super) fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

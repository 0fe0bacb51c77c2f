//! `kubetrail activity`: what was done, by whom, filtered (a user or service account, a
//! namespace, verbs, an object, failed requests only, ...), failed attempts included,
//! oldest first; `--follow` keeps printing what is stored next.

use std::io::Write as _;
use std::time::Duration;

use kubetrail::topology::stop_signal;
use kubetrail_query::{Entry, Order, RecordClass, TimelineQuery, render};

use super::answers::SourceArgs;

#[derive(clap::Args, Debug)]
pub struct ActivityArgs {
    /// A user (or the user a request impersonated); a service account is
    /// system:serviceaccount:NAMESPACE:NAME.
    #[arg(long)]
    user: Option<String>,
    /// A group the user was in.
    #[arg(long)]
    group: Option<String>,
    /// The namespace of the objects.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Verbs, comma-separated (create,update,patch,delete,get,list,watch,...).
    #[arg(long)]
    verb: Option<String>,
    /// An object (KIND/NAME) or a kind (pods).
    #[arg(long)]
    object: Option<String>,
    /// A subresource (eviction, exec, scale, binding, status).
    #[arg(long)]
    subresource: Option<String>,
    /// Event reasons, comma-separated.
    #[arg(long)]
    reason: Option<String>,
    /// Only one kind of record.
    #[arg(long, value_parser = ["audit", "event", "gap"])]
    kind: Option<String>,
    /// Only Warning Events.
    #[arg(long)]
    warnings: bool,
    /// Only failed requests (response code 400 and above).
    #[arg(long)]
    failed: bool,
    /// Only requests that change something (no get, list, watch).
    #[arg(long)]
    writes: bool,
    /// Records at or after this time: RFC 3339, or a duration before now (30m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Records before this time.
    #[arg(long)]
    until: Option<String>,
    /// How many records (the newest of the window, printed oldest first).
    #[arg(long, default_value_t = 200)]
    limit: usize,
    /// Every record of the window, oldest first (no limit).
    #[arg(long, conflicts_with = "limit")]
    all: bool,
    /// Keep printing records as they are stored (until Ctrl-C).
    #[arg(short = 'f', long)]
    follow: bool,
    #[command(flatten)]
    source: SourceArgs,
    /// Output format: lines for people, or one JSON object per record.
    #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

fn print(entries: &[Entry], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for e in entries {
        if json {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        } else {
            writeln!(out, "{}", render::entry(e, true))?;
        }
    }
    out.flush()?;
    Ok(())
}

pub async fn run(args: ActivityArgs) -> anyhow::Result<()> {
    fn parse<T: std::str::FromStr<Err = String>>(s: &Option<String>) -> anyhow::Result<Option<T>> {
        s.as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)
    }
    let mut q = TimelineQuery {
        since: parse(&args.since)?,
        until: parse(&args.until)?,
        namespace: args.namespace.clone(),
        object: parse(&args.object)?,
        user: args.user.clone(),
        group: args.group.clone(),
        verb: args
            .verb
            .as_deref()
            .unwrap_or("")
            .parse()
            .map_err(anyhow::Error::msg)?,
        subresource: args.subresource.clone(),
        reason: args
            .reason
            .as_deref()
            .unwrap_or("")
            .parse()
            .map_err(anyhow::Error::msg)?,
        kind: args.kind.as_deref().map(|k| match k {
            "audit" => RecordClass::Audit,
            "event" => RecordClass::Event,
            _ => RecordClass::Gap,
        }),
        warnings: args.warnings,
        failed: args.failed,
        writes: args.writes,
        ..TimelineQuery::default()
    };
    let json = args.format == "json";
    let opened = args.source.open().await?;
    let store = &opened.store;
    let position = if args.all {
        q.order = Order::Oldest;
        q.limit = Some(kubetrail_query::MAX_LIMIT);
        let mut position = None;
        loop {
            let page = store.timeline(&q).await?;
            print(&page.entries, json)?;
            position.get_or_insert(page.position);
            match page.next {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        position.unwrap_or_default()
    } else {
        q.order = Order::Newest;
        let mut got: Vec<Entry> = Vec::new();
        let mut position = None;
        while got.len() < args.limit {
            q.limit =
                Some((args.limit - got.len()).min(kubetrail_query::MAX_LIMIT as usize) as u32);
            let page = store.timeline(&q).await?;
            position.get_or_insert(page.position);
            got.extend(page.entries);
            match page.next {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        got.reverse();
        print(&got, json)?;
        position.unwrap_or_default()
    };
    if !args.follow {
        return Ok(());
    }
    q.cursor = None;
    q.after = Some(position);
    q.limit = Some(kubetrail_query::MAX_LIMIT);
    let follow = async {
        loop {
            let page = store.timeline(&q).await?;
            print(&page.entries, json)?;
            q.after = Some(page.position);
            if page.entries.len() < kubetrail_query::MAX_LIMIT as usize {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tokio::select! {
        r = follow => r,
        _ = stop_signal() => Ok(()),
    }
}

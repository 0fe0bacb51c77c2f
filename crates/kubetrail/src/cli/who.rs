//! `kubetrail who KIND/NAME`: the object's story, oldest first, its changes with the chains
//! of causes that led to them, its end state, what it made, and what evidence is missing.

use anyhow::Context as _;
use kubetrail_query::{WhoQuery, render};

use super::answers::SourceArgs;

#[derive(clap::Args, Debug)]
pub struct WhoArgs {
    /// The object: KIND/NAME as kubectl takes it (pod/web-0, deploy/web, node/node-1,
    /// clusterrolebinding/admins, widgets.example.com/w1).
    object: String,
    /// Its namespace (without it, the object is looked for in every namespace).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Only records at or after this time: RFC 3339, or a duration before now (30m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Only records before this time.
    #[arg(long)]
    until: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Print the plans of the queries the story's reads use (which indexes answer), not the story.
    #[arg(long)]
    explain: bool,
}

pub async fn run(args: WhoArgs) -> anyhow::Result<()> {
    let q = WhoQuery {
        object: Some(args.object.parse().map_err(anyhow::Error::msg)?),
        namespace: args.namespace.clone(),
        since: args
            .since
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        until: args
            .until
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    };
    let opened = args.source.open().await?;
    if args.explain {
        for line in opened.store.explain(&q).await? {
            println!("{line}");
        }
        return Ok(());
    }
    let story = opened.store.who(&q).await?;
    match args.format.as_str() {
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&story).context("writing JSON")?
        ),
        _ => print!("{}", render::story(&story)),
    }
    Ok(())
}

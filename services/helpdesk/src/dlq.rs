//! `helpdesk dlq list|replay`: the dead letters of every consumer queue, on either bus.

use clap::Subcommand;

use helpdesk_kit::bus::dlq::DeadLetters;
use helpdesk_kit::bus::topology;

#[derive(Subcommand)]
pub enum Action {
    /// Print the dead letters (queue, event id, event type, attempts, last error).
    List {
        /// Only this queue (e.g. audit-service.events); default: every consumer queue.
        #[arg(long)]
        queue: Option<String>,
        /// One JSON array with the message bodies, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Hand dead letters back to their queue with a fresh attempt count.
    Replay {
        #[arg(long)]
        queue: Option<String>,
        /// Only the message with this id (the event id).
        #[arg(long)]
        id: Option<String>,
    },
}

/// The queues an action covers: `only`, which must be a consumer queue, or all of them.
fn queues(only: Option<String>) -> anyhow::Result<Vec<String>> {
    let all: Vec<String> = topology::PLATFORM
        .iter()
        .map(|q| q.name.to_string())
        .collect();
    match only {
        None => Ok(all),
        Some(q) if all.contains(&q) => Ok(vec![q]),
        Some(q) => anyhow::bail!("unknown queue {q}; the queues are: {}", all.join(", ")),
    }
}

pub async fn run(bus: &dyn DeadLetters, action: Action) -> anyhow::Result<()> {
    match action {
        Action::List { queue, json } => {
            let mut all = Vec::new();
            for q in queues(queue)? {
                all.extend(bus.list(&q).await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no dead letters");
            } else {
                for d in &all {
                    println!(
                        "{}\t{}\t{}\tattempts={}\t{}",
                        d.queue,
                        d.message_id,
                        d.routing_key,
                        d.attempts,
                        d.last_error.as_deref().unwrap_or("-")
                    );
                }
                println!("{} dead letter(s)", all.len());
            }
        }
        Action::Replay { queue, id } => {
            let mut total = 0;
            for q in queues(queue)? {
                let n = bus.replay(&q, id.as_deref()).await?;
                if n > 0 {
                    println!("{q}: {n} replayed");
                }
                total += n;
            }
            println!("{total} dead letter(s) replayed");
        }
    }
    Ok(())
}

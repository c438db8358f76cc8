//! `mouthmap topics`: create the pipeline's topics.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::KafkaArgs;

#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Create every pipeline topic that does not exist yet (frames, mouths, logits, transcripts, dead letters).
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
    },
}

pub async fn run(args: TopicsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Create { mut kafka } => {
            kafka.create_topics = true;
            let settings = kafka.settings("mouthmap-topics")?;
            kafka.prepare_topics(&settings).await?;
            for t in kafka.all_topics() {
                println!("{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

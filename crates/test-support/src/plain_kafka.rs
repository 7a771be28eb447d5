//! A plaintext Kafka broker of a test's own (KRaft, one node) on free loopback ports, which the test may SIGKILL
//! and start again on the same ports and data directory: for tests of what survives a broker outage, which must
//! not touch the shared stack. Stopped (by its pid) and removed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use herald_platform::kafka::kraft::SingleNode;
use herald_platform::KafkaConfig;

use crate::secure_kafka::{free_port, kafka_libs, run, wait_until_answers};
use crate::unique_name;

/// A running (or killed) broker; see the module documentation.
#[derive(Debug)]
pub struct PlainKafka {
    dir: PathBuf,
    libs: PathBuf,
    child: Option<Child>,
    /// `127.0.0.1:<port>`, the same across restarts.
    pub brokers: String,
}

impl PlainKafka {
    /// Formats the storage, starts the broker and waits until it answers a metadata request.
    pub async fn start() -> Result<Self> {
        let libs = kafka_libs()?;
        let dir = std::env::temp_dir().join(unique_name("herald-plain-kafka"));
        std::fs::create_dir_all(&dir)?;
        let (port, controller) = (free_port()?, free_port()?);
        let properties = SingleNode::plaintext(port, controller, &dir.join("data")).properties();
        std::fs::write(dir.join("server.properties"), properties)?;
        std::fs::write(
            dir.join("log4j.properties"),
            "log4j.rootLogger=WARN, stdout\n\
             log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n\
             log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n\
             log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n",
        )?;
        let mut kafka = Self {
            dir,
            libs,
            child: None,
            brokers: format!("127.0.0.1:{port}"),
        };
        let cluster_id = run(
            kafka.java("kafka.tools.StorageTool").arg("random-uuid"),
            "kafka-storage random-uuid",
        )?;
        let properties = kafka.dir.join("server.properties");
        run(
            kafka
                .java("kafka.tools.StorageTool")
                .args(["format", "-t", cluster_id.trim(), "-c"])
                .arg(&properties),
            "kafka-storage format",
        )?;
        kafka.restart().await?;
        Ok(kafka)
    }

    fn java(&self, main: &str) -> Command {
        let mut command = Command::new("java");
        command
            .arg("-Xmx384m")
            .arg(format!(
                "-Dlog4j.configuration=file:{}",
                self.dir.join("log4j.properties").display()
            ))
            .arg(format!("-Dkafka.logs.dir={}", self.dir.display()))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .arg(main);
        command
    }

    /// A Kafka configuration of this broker under `topic_prefix`.
    pub fn config(&self, topic_prefix: &str) -> KafkaConfig {
        KafkaConfig::new(&self.brokers, topic_prefix)
    }

    /// SIGKILLs the broker (only the process this started, by its handle) and waits until it is gone.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the broker (again) on the same ports and data directory and waits until it answers.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kafka.log"))?;
        let child = self
            .java("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting the Kafka broker")?;
        self.child = Some(child);
        wait_until_answers(
            &self.config(""),
            &self.dir.join("kafka.log"),
            "the test's Kafka broker to answer",
        )
        .await;
        Ok(())
    }
}

impl Drop for PlainKafka {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("stopping the test's Kafka broker: {e}");
        }
        if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("removing the test's Kafka directory: {e}");
            }
        }
    }
}

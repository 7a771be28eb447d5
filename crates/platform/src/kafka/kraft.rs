//! The `server.properties` of a one-node KRaft broker on loopback: the dev stack's broker (`cargo xtask stack`)
//! and the brokers tests start of their own (`herald-test-support`), which differ only in their listeners and
//! their partition counts.

use std::path::Path;

/// A one-node KRaft broker (broker and controller in one process) on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct SingleNode<'a> {
    controller: u16,
    /// `(name, port, security protocol)`, every one advertised; brokers talk to each other on the first.
    listeners: Vec<(&'static str, u16, &'static str)>,
    data: &'a Path,
    partitions: u32,
    offsets_partitions: u32,
}

impl<'a> SingleNode<'a> {
    /// A broker with the given listeners (`(name, port, security protocol)`, brokers talk to each other on the
    /// first), its controller on `controller` and its logs in `data`; one partition a topic.
    pub fn new(
        listeners: &[(&'static str, u16, &'static str)],
        controller: u16,
        data: &'a Path,
    ) -> Self {
        Self {
            controller,
            listeners: listeners.to_vec(),
            data,
            partitions: 1,
            offsets_partitions: 1,
        }
    }

    /// A broker on one plaintext listener on `port`.
    pub fn plaintext(port: u16, controller: u16, data: &'a Path) -> Self {
        Self::new(&[("PLAINTEXT", port, "PLAINTEXT")], controller, data)
    }

    /// Topics created without a partition count get `topics` (`num.partitions`), the offsets topic `offsets`.
    pub fn partitions(self, topics: u32, offsets: u32) -> Self {
        Self {
            partitions: topics,
            offsets_partitions: offsets,
            ..self
        }
    }

    /// The properties, one a line; a caller appends its own (TLS, retention) after them.
    pub fn properties(&self) -> String {
        let join = |each: &dyn Fn(&(&str, u16, &str)) -> String| {
            self.listeners
                .iter()
                .map(each)
                .collect::<Vec<_>>()
                .join(",")
        };
        let bound = join(&|(name, port, _)| format!("{name}://127.0.0.1:{port}"));
        let protocols = join(&|(name, _, protocol)| format!("{name}:{protocol}"));
        let inter_broker = self.listeners.first().map_or("PLAINTEXT", |l| l.0);
        format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners={bound},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners={bound}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name={inter_broker}\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,{protocols}\n\
             log.dirs={data}\n\
             num.partitions={partitions}\n\
             auto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions={offsets}\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n",
            controller = self.controller,
            data = self.data.display(),
            partitions = self.partitions,
            offsets = self.offsets_partitions,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_talks_to_itself_on_its_first_listener() {
        let plain = SingleNode::plaintext(9092, 9093, Path::new("/data"))
            .partitions(3, 10)
            .properties();
        for line in [
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n",
            "advertised.listeners=PLAINTEXT://127.0.0.1:9092\n",
            "inter.broker.listener.name=PLAINTEXT\n",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n",
            "log.dirs=/data\nnum.partitions=3\n",
            "offsets.topic.num.partitions=10\n",
        ] {
            assert!(plain.contains(line), "{line} missing from: {plain}");
        }
        let two = SingleNode::new(
            &[("INTERNAL", 1, "PLAINTEXT"), ("SSL", 2, "SSL")],
            3,
            Path::new("/data"),
        )
        .properties();
        assert!(two.contains("listeners=INTERNAL://127.0.0.1:1,SSL://127.0.0.1:2,CONTROLLER"));
        assert!(two.contains("inter.broker.listener.name=INTERNAL\n"));
        assert!(two.contains("protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SSL:SSL\n"));
    }
}

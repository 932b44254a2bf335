// The Java client's placement of keyed records, for tests/integration/test_loop_producer.py.
// Reads keys as "k<hex>" lines on stdin; prints "k<hex> <Utils> <BuiltInPartitioner> <sent>":
// toPositive(murmur2(key)) % n, the producer's own partitionForKey, and (with a bootstrap and
// a topic) the partition a real KafkaProducer wrote the record to, from its RecordMetadata.
// Run: java -cp "<kafka>/libs/*" KafkaPlacement.java <partitions> [<bootstrap> <topic>]
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.Utils;

public class KafkaPlacement {
    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[0]);
        List<byte[]> keys = new ArrayList<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        for (String line; (line = in.readLine()) != null; ) {
            keys.add(HexFormat.of().parseHex(line.trim().substring(1)));
        }
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        if (args.length == 3) {
            Properties p = new Properties();
            p.put("bootstrap.servers", args[1]);
            p.put("acks", "all");
            p.put("key.serializer", ByteArraySerializer.class.getName());
            p.put("value.serializer", ByteArraySerializer.class.getName());
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
                for (byte[] key : keys) {
                    sent.add(producer.send(new ProducerRecord<>(args[2], key, "java".getBytes())));
                }
                producer.flush();
            }
        }
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < keys.size(); i++) {
            byte[] key = keys.get(i);
            out.append('k').append(HexFormat.of().formatHex(key)).append(' ')
                .append(Utils.toPositive(Utils.murmur2(key)) % n).append(' ')
                .append(BuiltInPartitioner.partitionForKey(key, n)).append(' ')
                .append(sent.isEmpty() ? -1 : sent.get(i).get().partition()).append('\n');
        }
        System.out.print(out);
    }
}

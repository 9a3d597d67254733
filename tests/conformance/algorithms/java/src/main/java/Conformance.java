// The runner conformance algorithm in Java (tests/conformance/README.md).
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.TextNode;
import dev.algomesh.runner.Algorithm;
import dev.algomesh.runner.Call;
import dev.algomesh.runner.Runner;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

public final class Conformance implements Algorithm {
    private static final AtomicInteger LOADS = new AtomicInteger();

    @Override
    public void load() {
        LOADS.incrementAndGet();
    }

    @Override
    public Object apply(Call call, Object input) throws Exception {
        if (input instanceof String text) {
            return text;
        }
        if (input instanceof byte[] bytes) {
            byte[] reversed = new byte[bytes.length];
            for (int i = 0; i < bytes.length; i++) {
                reversed[i] = bytes[bytes.length - 1 - i];
            }
            return reversed;
        }
        JsonNode json = (JsonNode) input;
        if (!json.isObject() || !json.has("op")) {
            return json;
        }
        switch (json.get("op").asText()) {
            case "echo":
                return json.get("value");
            case "text":
                return json.get("value").asText();
            case "bytes":
                return json.get("value").asText().getBytes(StandardCharsets.UTF_8);
            case "loads":
                return LOADS.get();
            case "raise":
                throw new IllegalStateException(json.get("message").asText());
            case "crash":
                System.out.flush();
                Runtime.getRuntime().halt(3);
                return null;
            case "print":
                System.out.println(json.get("value").asText());
                return TextNode.valueOf("printed"); // JSON, as the table says (a String is text)
            case "pipe":
                Object result = call.pipe(json.get("target").asText(), json.get("input"));
                return Map.of("via", "java", "result", result);
            case "sleep":
                Thread.sleep(json.get("ms").asLong());
                return TextNode.valueOf("slept");
            default:
                return json;
        }
    }

    public static void main(String[] args) {
        Runner.serve(new Conformance());
    }
}

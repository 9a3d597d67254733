// poly/label-java, stage 5 of examples/polyglot (Java): the record from poly/score-python
// in; a label, its strength and the keywords added, piped on to poly/fingerprint-exec.
// Answers with what the rest of the pipeline answers.
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.algomesh.runner.Algorithm;
import dev.algomesh.runner.Call;
import dev.algomesh.runner.Runner;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

public final class Label implements Algorithm {
    private static final String NEXT = "poly/fingerprint-exec";
    private static final int KEYWORDS = 3;

    static String label(double compound) {
        // VADER's recommended thresholds for the compound score.
        return compound >= 0.05 ? "positive" : compound <= -0.05 ? "negative" : "neutral";
    }

    static String strength(double compound) {
        double a = Math.abs(compound);
        return a >= 0.75 ? "strong" : a >= 0.35 ? "moderate" : a >= 0.05 ? "weak" : "none";
    }

    /** The words that weighed most (by |valence|, then in order of appearance), each once. */
    static List<String> keywords(JsonNode hits) {
        List<JsonNode> sorted = new ArrayList<>();
        hits.forEach(sorted::add);
        sorted.sort(Comparator.comparingDouble((JsonNode h) -> -Math.abs(h.get(1).asDouble())));  // stable
        List<String> out = new ArrayList<>();
        for (JsonNode hit : sorted) {
            String word = hit.get(0).asText();
            if (!out.contains(word) && out.size() < KEYWORDS) {
                out.add(word);
            }
        }
        return out;
    }

    @Override
    public Object apply(Call call, Object input) {
        if (!(input instanceof ObjectNode record) || !record.path("compound").isNumber() || !record.path("hits").isArray()) {
            throw new IllegalArgumentException("poly/label-java takes the record of poly/score-python (JSON with \"compound\" and \"hits\")");
        }
        double compound = record.get("compound").asDouble();
        record.put("label", label(compound));
        record.put("strength", strength(compound));
        ArrayNode words = record.putArray("keywords");
        keywords(record.get("hits")).forEach(words::add);
        JsonNode stages = record.path("stages");
        (stages.isArray() ? (ArrayNode) stages : record.putArray("stages")).add(String.format("%s@%s (java %s)",
            System.getenv("ALGOMESH_ALGORITHM"), System.getenv("ALGOMESH_VERSION"), System.getProperty("java.version")));
        // An error of a later stage is thrown here as an AlgomeshException and answered as it came.
        return call.pipe(NEXT, record);
    }

    public static void main(String[] args) {
        Runner.serve(new Label());
    }
}

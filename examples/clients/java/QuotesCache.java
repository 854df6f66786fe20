// The quotes cache of seeds 000/001 with java.net.http.HttpClient (JDK 11+):
// builders publish the cache as version n+1 of a snapshot, readers poll it
// with one conditional GET that transfers nothing while nothing changed.
//
// - A builder takes the build lease first, so concurrent rebuilds coalesce:
//   a second builder is told someone is building (409) and polls instead.
// - It publishes with If-Match: "n" (the version it built from), so a build
//   from a stale base is refused with 412 naming the current version,
//   instead of overwriting a newer cache (the seed's lost update).
// - Readers send If-None-Match: "n" and get 304 until a new version lands.
//
// Environment: IFMATCH_URL (e.g. http://127.0.0.1:8080), IFMATCH_TOKEN.
// Run: javac -d out QuotesCache.java && java -cp out QuotesCache

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class QuotesCache {
    static final String BASE = System.getenv("IFMATCH_URL").replaceAll("/$", "");
    static final String AUTH = "Bearer " + System.getenv("IFMATCH_TOKEN");
    static final HttpClient HTTP = HttpClient.newHttpClient();
    static final String NAME = "quotes-" + Long.toHexString(System.nanoTime());

    static HttpRequest.Builder request(String path) {
        return HttpRequest.newBuilder(URI.create(BASE + "/v1/snapshots/" + NAME + path))
            .header("Authorization", AUTH);
    }

    static HttpResponse<String> send(HttpRequest.Builder r) throws Exception {
        return HTTP.send(r.build(), HttpResponse.BodyHandlers.ofString());
    }

    /** A top-level field of a small JSON object: a string (unescaped) or a bare value. */
    static String field(String json, String name) {
        Matcher m = Pattern.compile("\"" + name + "\"\\s*:\\s*(?:\"((?:[^\"\\\\]|\\\\.)*)\"|([^,}\\s]+))").matcher(json);
        if (!m.find()) throw new IllegalStateException("no " + name + " in " + json);
        return m.group(1) != null ? m.group(1).replace("\\\"", "\"") : m.group(2);
    }

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    /** Builds the cache from the database (here: a fixed list) for version `version`. */
    static String buildCache(long version, String quotes) {
        return "{\"version\":" + version + ",\"quotes\":[" + quotes + "]}";
    }

    /** Publishes over `base` (0: nothing published yet); returns the response. */
    static HttpResponse<String> publish(long base, String body) throws Exception {
        HttpRequest.Builder r = request("").PUT(HttpRequest.BodyPublishers.ofString(body));
        r.header(base == 0 ? "If-None-Match" : "If-Match", base == 0 ? "*" : "\"" + base + "\"");
        return send(r);
    }

    public static void main(String[] args) throws Exception {
        // Builder 1 takes the build lease; builder 2 finds it taken and will poll instead.
        HttpResponse<String> lease = send(request("/build").POST(HttpRequest.BodyPublishers.ofString("{\"ttl\": 60}")));
        check(lease.statusCode() == 201, "build lease: " + lease.body());
        HttpResponse<String> second = send(request("/build").POST(HttpRequest.BodyPublishers.noBody()));
        check(second.statusCode() == 409 && field(second.body(), "error").equals("lease_held"), second.body());
        System.out.println("builder 2: someone is building (holder " + field(second.body(), "holder") + "), polling instead");

        // Builder 1 publishes version 1 and gives the lease back.
        HttpResponse<String> v1 = publish(0, buildCache(1, "\"Carpe diem\""));
        check(v1.statusCode() == 201, "publish v1: " + v1.body());
        String etag = v1.headers().firstValue("ETag").orElseThrow();
        send(request("/build").DELETE().header("Lease-Owner", field(lease.body(), "owner")));
        System.out.println("builder 1: published version " + field(v1.body(), "version") + ", ETag " + etag);

        // A reader: the first GET downloads, the next polls transfer nothing.
        HttpResponse<String> read = send(request("").GET());
        check(read.statusCode() == 200 && read.body().contains("Carpe diem"), read.body());
        HttpResponse<String> poll = send(request("").GET().header("If-None-Match", etag));
        check(poll.statusCode() == 304 && poll.body().isEmpty(), "poll: " + poll.statusCode());
        System.out.println("reader: 304 Not Modified while the cache is at " + etag);

        // Two builders start from version 1 (a manual refresh racing a scheduled one).
        HttpResponse<String> v2 = publish(1, buildCache(2, "\"Carpe diem\",\"Memento mori\""));
        check(v2.statusCode() == 201, "publish v2: " + v2.body());
        HttpResponse<String> stale = publish(1, buildCache(2, "\"Carpe diem\""));
        check(stale.statusCode() == 412, "stale publish: " + stale.body());
        System.out.println("stale builder: 412, the cache is already at " + field(stale.body(), "current_etag"));

        // The reader's next poll gets version 2.
        HttpResponse<String> changed = send(request("").GET().header("If-None-Match", etag));
        check(changed.statusCode() == 200 && changed.body().contains("Memento mori"), changed.body());
        String now = changed.headers().firstValue("ETag").orElseThrow();
        check(now.equals("\"2\""), now);
        System.out.println("reader: new version " + now + ": " + changed.body());
    }
}

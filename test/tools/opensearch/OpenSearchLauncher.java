/*
 * OpenSearchLauncher.java - starts one OpenSearch 2.19 node for the test bed, in the JVM that
 * runs this class, from the jars that deploy/local/install-deps.sh copied from Maven Central
 * (test/tools/opensearch/pom.xml). test/tools/testbed.sh compiles nothing: install-deps.sh
 * compiled this file into $FTSYNC_DEPS_DIR/opensearch/launcher.
 *
 *   java -cp 'launcher:lib/*' OpenSearchLauncher key=value ...
 *
 * Every argument is one node setting (cluster.name, path.home, http.port, ...); there is no
 * opensearch.yml. The node runs until the JVM is told to stop (SIGTERM, SIGINT): a shutdown
 * hook closes it, so its data is flushed and its ports are free when the process is gone.
 *
 * Why not org.opensearch.bootstrap.OpenSearch, the distribution's main class: it insists on a
 * distribution's layout (a modules/ directory with plugin descriptors, a jvm.options, a
 * security policy) and runs the production bootstrap checks, none of which a throwaway node on
 * the loopback interface needs. Node's protected constructor takes the plugin classes to load
 * from the class path instead, which is how OpenSearch's own test framework starts nodes. With
 * no Bootstrap there is no security manager, no jar hell check and no mlockall; the security
 * plugin is not on the class path, so the node speaks plain HTTP without authentication.
 *
 * Invariants: the process prints "ftsync-opensearch-launcher: started" only once the node
 * accepts requests; any failure to start ends the process with status 1 and the exception on
 * stderr (the test bed shows the tail of that log).
 */
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.logging.log4j.Level;
import org.apache.logging.log4j.core.appender.ConsoleAppender;
import org.apache.logging.log4j.core.config.Configurator;
import org.apache.logging.log4j.core.config.builder.api.ConfigurationBuilder;
import org.apache.logging.log4j.core.config.builder.api.ConfigurationBuilderFactory;
import org.apache.logging.log4j.core.config.builder.impl.BuiltConfiguration;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

public final class OpenSearchLauncher {
    private static final String NAME = "ftsync-opensearch-launcher";
    /* How long the shutdown hook waits for the node's threads to finish after close(). */
    private static final long CLOSE_WAIT_SECONDS = 15;

    /* The modules a node of the distribution loads from modules/ that the test bed needs. */
    private static final List<Class<? extends Plugin>> PLUGINS =
        Arrays.asList(Netty4Plugin.class, CommonAnalysisPlugin.class, PainlessPlugin.class);

    /* Node's constructor that takes class-path plugins is protected: a subclass reaches it. */
    private static final class TestbedNode extends Node {
        TestbedNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    private OpenSearchLauncher() {}

    private static Settings parseSettings(String[] args) {
        Settings.Builder builder = Settings.builder();
        for (String arg : args) {
            int equals = arg.indexOf('=');
            if (equals <= 0) {
                throw new IllegalArgumentException("expected key=value, got \"" + arg + "\"");
            }
            builder.put(arg.substring(0, equals), arg.substring(equals + 1));
        }
        return builder.build();
    }

    /* Log lines (timestamp, level, logger, message, stack trace) to stdout, which testbed.sh
     * sends to the node's log file; no log files of the node's own. LogConfigurator's
     * configureWithoutConfig would keep log4j's default configuration, which prints errors only,
     * and its configure() wants a log4j2.properties in a config directory. */
    private static void configureLogging(String level) {
        ConfigurationBuilder<BuiltConfiguration> builder =
            ConfigurationBuilderFactory.newConfigurationBuilder();
        builder.setStatusLevel(Level.ERROR);
        builder.add(builder.newAppender("console", "Console")
                        .addAttribute("target", ConsoleAppender.Target.SYSTEM_OUT)
                        .add(builder.newLayout("PatternLayout")
                                 .addAttribute("pattern", "[%d{ISO8601}][%-5p][%c{1.}] %m%n")));
        builder.add(builder.newRootLogger(Level.toLevel(level, Level.INFO))
                        .add(builder.newAppenderRef("console")));
        Configurator.initialize(builder.build());
    }

    public static void main(String[] args) {
        final Node node;
        try {
            Settings settings = parseSettings(args);
            if (!settings.hasValue("path.home")) {
                throw new IllegalArgumentException("path.home=... is required");
            }
            configureLogging(settings.get("logger.level", "info"));
            Environment environment = InternalSettingsPreparer.prepareEnvironment(
                settings, Collections.emptyMap(), null, () -> settings.get("node.name", NAME));
            node = new TestbedNode(environment, PLUGINS);
        } catch (Exception | LinkageError e) {
            System.err.println(NAME + ": cannot create the node: " + e);
            e.printStackTrace();
            System.exit(1);
            return;
        }

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(CLOSE_WAIT_SECONDS, TimeUnit.SECONDS);
            } catch (Exception e) {
                System.err.println(NAME + ": error while stopping: " + e);
            } finally {
                stopped.countDown();
            }
        }, NAME + "-stop"));

        try {
            node.start();
        } catch (Exception | LinkageError e) {
            System.err.println(NAME + ": cannot start the node: " + e);
            e.printStackTrace();
            // halt, not exit: the shutdown hook would wait on a node that never started.
            Runtime.getRuntime().halt(1);
        }
        System.out.println(NAME + ": started");
        System.out.flush();
        // The node's threads keep the JVM alive; this one waits so main() returns only on stop.
        try {
            stopped.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}

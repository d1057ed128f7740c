import Testing
@testable import MGPolicy

/// An environment backed by dictionaries. Names it does not contain read as missing.
private struct DictionaryEnvironment: ExpressionEnvironment {
    var variables: [String: ExpressionValue] = [:]
    var metrics: [Metric: Double] = [:]

    func variable(_ name: String) -> ExpressionValue { variables[name] ?? .missing }
    func metric(_ metric: Metric) -> Double { metrics[metric] ?? .nan }
}

/// Records which metrics evaluation reads, to observe short-circuiting.
private final class RecordingEnvironment: ExpressionEnvironment {
    var metricsRead: [Metric] = []

    func variable(_ name: String) -> ExpressionValue { .missing }

    func metric(_ metric: Metric) -> Double {
        metricsRead.append(metric)
        return 1
    }
}

private let position = SourcePosition(file: "p.yaml", line: 3, column: 10)

private let namedLists: [String: ExpressionValue] = [
    "allowed_domains": .list([.string("docs.example.com"), .string("api.example.com")]),
    "blocked_models": .list([.string("gpt-4")]),
]

private let environment = DictionaryEnvironment(
    variables: [
        "time.hour": .number(14),
        "time.minute": .number(30),
        "time.weekday": .string("tue"),
        "time.date": .string("2025-03-04"),
        "request.model": .string("gpt-4o"),
        "request.domain": .string("docs.example.com"),
        "request.max_tokens": .number(4000),
        "agent.id": .string("agent-7"),
        "agent.tags": .list([.string("prod"), .string("research")]),
        "agent.trust_tier": .string("verified"),
        "task.calls": .number(12),
        "estimated_cost_usd": .number(0.25),
        "context.region": .string("eu"),
        "context.count": .string("5"),
        "context.cost-center": .string("r-and-d"),
        "context.flag": .string("true"),
        "context.enabled": .bool(true),
    ],
    metrics: [
        .measure(.cost, .seconds(3600)): 3.5,
        .measure(.errors, .seconds(300)): 4,
        .measure(.calls, .today): 100,
        .measure(.calls, .seconds(3600)): 42,
        .measure(.cost, .calls(20)): 1.75,
        .costToday: 7,
        .currentCost: 0.5,
        .tokensPerCallTrend(calls: 10): 2.5,
        .tokensPerCallTrend(calls: 5): 1.2,
        .sameActionCount(windowSeconds: 600): 21,
        .sameActionRepeated: 3,
    ])

private func parse(_ text: String, quoted: Bool = false) throws -> Condition {
    try ConditionParser.parse(text, position: position, namedLists: namedLists, quoted: quoted)
}

/// Returns the error that parsing `text` throws, or nil when it parses.
private func parseError(_ text: String, quoted: Bool = false) -> ConditionError? {
    do {
        _ = try ConditionParser.parse(text, position: position, namedLists: namedLists, quoted: quoted)
        return nil
    } catch {
        return error
    }
}

// MARK: - Evaluation cases

/// Conditions with the result they must have in `environment`.
private let evaluationCases: [(String, Bool)] = [
    // Precedence and parentheses
    ("1 + 2 * 3 == 7", true),
    ("(1 + 2) * 3 == 9", true),
    ("10 - 4 - 3 == 3", true),
    ("12 / 3 / 2 == 2", true),
    ("-2 * 3 == -6", true),
    ("-(2 + 3) == -5", true),
    ("2 - -1 == 3", true),
    ("true OR false AND false", true),
    ("(true OR false) AND false", false),
    ("NOT false AND false", false),
    ("NOT (false AND false)", true),
    ("NOT 1 == 2", true),
    ("1 + 1 == 2 AND 2 * 2 == 4", true),
    ("((time.hour == 14))", true),

    // Comparison operators
    ("time.hour == 14", true),
    ("time.hour != 14", false),
    ("time.hour < 15", true),
    ("time.hour <= 14", true),
    ("time.hour > 14", false),
    ("time.hour >= 14", true),
    ("time.minute > time.hour", true),
    ("true == true", true),
    ("true != false", true),
    ("agent.tags == ['prod', 'research']", true),

    // Logical operators in any case and as symbols
    ("true and true", true),
    ("false Or true", true),
    ("not false", true),
    ("Not False", true),
    ("TRUE AND False", false),
    ("true && true", true),
    ("false || true", true),
    ("false || false", false),
    ("!false", true),
    ("!(1 == 1)", false),
    ("! true", false),

    // Strings in both quote kinds, with escapes
    ("request.model == 'gpt-4o'", true),
    ("request.model == \"gpt-4o\"", true),
    (#"'it\'s' == "it's""#, true),
    (#""say \"hi\"" == 'say "hi"'"#, true),
    (#"'a\\b' == "a\\b""#, true),
    (#"'C:\tmp' == "C:\\tmp""#, true),

    // Lists, named lists and list variables
    ("request.model in ['gpt-4o', 'gpt-4o-mini']", true),
    ("request.model not in ['gpt-4o']", false),
    ("request.model NOT IN ['claude']", true),
    ("3 in [1, 2, 3]", true),
    ("'x' in []", false),
    ("context.region in [context.region, 'us']", true),
    ("request.domain in allowed_domains", true),
    ("request.model in blocked_models", false),
    ("request.model not in blocked_models", true),
    ("'prod' in agent.tags", true),
    ("'dev' not in agent.tags", true),

    // Substrings
    ("'example' in request.domain", true),
    ("'zzz' in request.domain", false),
    ("'' in 'abc'", true),
    ("'bc' in 'abc'", true),

    // Trust tiers order by tier, other strings lexically
    ("agent.trust_tier >= 'basic'", true),
    ("agent.trust_tier < 'privileged'", true),
    ("agent.trust_tier > 'verified'", false),
    ("'untrusted' < 'basic'", true),
    ("'privileged' > 'verified'", true),
    ("'apple' < 'banana'", true),
    ("'basic' < 'zebra'", true),
    ("time.date >= '2025-01-01'", true),
    ("time.weekday == 'tue'", true),
    ("time.weekday in ['sat', 'sun']", false),
    ("'sun' != time.weekday", true),
    ("agent.trust_tier in ['verified', 'privileged']", true),

    // Missing values: every comparison with one is missing, which is not true
    ("context.absent == 'x'", false),
    ("context.absent != 'x'", false),
    ("context.absent < 5", false),
    ("context.absent >= 5", false),
    ("context.absent == context.absent", false),
    ("context.absent in ['x']", false),
    ("context.absent not in ['x']", false),
    ("'a' in context.absent", false),
    ("context.absent + 1 == 1", false),
    ("context.absent + 1 != 1", false),
    ("-context.absent < 0", false),
    ("NOT context.absent", false),
    ("error_rate_last_hour >= 0", false),
    ("error_rate_last_hour != 0", false),

    // Three-valued logic: false decides AND, true decides OR
    ("context.absent == 'x' OR 1 == 1", true),
    ("context.absent == 'x' AND 1 == 2", false),

    // Division by zero gives missing
    ("1 / 0 == 1 / 0", false),
    ("1 / 0 != 0", false),
    ("cost_last_hour / 0 > 0", false),
    ("cost_last_hour / 0 <= 0", false),

    // A number never equals a string
    ("context.region == 'eu'", true),
    ("context.count == 5", false),
    ("context.count != 5", true),
    ("context.count > 4", false),

    // Ratios and metrics with window suffixes
    ("tokens_per_call_trend over 10 calls > 2x", true),
    ("tokens_per_call_trend > 3x", false),
    ("tokens_per_call_trend over 5 calls < 1.5x", true),
    ("1.5x == 1.5", true),
    ("errors in last 5 minutes > 3", true),
    ("errors in last 5 minutes > 3 AND cost_last_hour > 3", true),
    ("calls in last 1 hour == 42", true),
    ("cost over 20 calls > 1.5", true),
    ("same_action_count in last 10 minutes > 20", true),
    ("same_action_repeated >= 3", true),
    ("cost_today + current_cost == 7.5", true),
    ("calls_today / 4 == 25", true),
    ("estimated_cost_usd + current_cost > 0.7", true),

    // Only a boolean true counts as true
    ("context.enabled", true),
    ("context.flag", false),
    ("context.absent", false),
]




// MARK: - Metric cases

private let metricCases: [(String, Metric)] = [
    ("cost_last_minute", .measure(.cost, .seconds(60))),
    ("calls_last_hour", .measure(.calls, .seconds(3600))),
    ("cost_last_day", .measure(.cost, .seconds(86_400))),
    ("tokens_last_5min", .measure(.tokens, .seconds(300))),
    ("input_tokens_last_30s", .measure(.inputTokens, .seconds(30))),
    ("output_tokens_last_2h", .measure(.outputTokens, .seconds(7200))),
    ("errors_last_1d", .measure(.errors, .seconds(86_400))),
    ("error_rate_last_10_minutes", .measure(.errorRate, .seconds(600))),
    ("denials_last_15_mins", .measure(.denials, .seconds(900))),
    ("calls_last_3days", .measure(.calls, .seconds(259_200))),
    ("calls_last_45sec", .measure(.calls, .seconds(45))),
    ("tokens_today", .measure(.tokens, .today)),
    ("calls_task", .measure(.calls, .task)),
    ("errors_run", .measure(.errors, .run)),
    ("error_rate_task", .measure(.errorRate, .task)),
    ("input_tokens_run", .measure(.inputTokens, .run)),
    ("avg_cost_1h", .average(.cost, bucketSeconds: 3600)),
    ("avg_calls_5min", .average(.calls, bucketSeconds: 300)),
    ("avg_error_rate_1_hour", .average(.errorRate, bucketSeconds: 3600)),
    ("avg_input_tokens_30min", .average(.inputTokens, bucketSeconds: 1800)),
    ("avg_tokens_1d", .average(.tokens, bucketSeconds: 86_400)),
    ("cost_today", .costToday),
    ("daily_cost", .costToday),
    ("current_cost", .currentCost),
    ("average_cost", .averageCost),
    ("same_action_repeated", .sameActionRepeated),
    ("same_action_count", .sameActionCount(windowSeconds: 300)),
    ("same_action_count in last 10 minutes", .sameActionCount(windowSeconds: 600)),
    ("tokens_per_call_trend", .tokensPerCallTrend(calls: 10)),
    ("tokens_per_call_trend over 5 calls", .tokensPerCallTrend(calls: 5)),
    ("errors in last 5 minutes", .measure(.errors, .seconds(300))),
    ("calls in last 1 hour", .measure(.calls, .seconds(3600))),
    ("cost over 20 calls", .measure(.cost, .calls(20))),
    ("error_rate over 1 call", .measure(.errorRate, .calls(1))),
    ("errors IN LAST 90 SECONDS", .measure(.errors, .seconds(90))),
    ("calls in last 1.5 hours", .measure(.calls, .seconds(5400))),
    ("calls in last hour", .measure(.calls, .seconds(3600))),
    ("calls in last 5min", .measure(.calls, .seconds(300))),
    ("tokens in last 2 d", .measure(.tokens, .seconds(172_800))),
    ("denials in last 30 s", .measure(.denials, .seconds(30))),
]








// MARK: - Error cases

/// Conditions that must fail to parse, with a fragment of the message and the column of the
/// offending token. The scalar starts at column 10, so a token at offset k is at column 10 + k.
private let errorCases: [(String, String, Int)] = [
    ("", "empty condition", 10),
    ("   ", "empty condition", 10),
    ("cost_todya > 5", "unknown identifier 'cost_todya' (did you mean 'cost_today'?)", 10),
    ("reqeust.model == 'x'", "unknown identifier 'reqeust.model' (did you mean 'request.model'?)", 10),
    ("cost_lst_hour > 1", "did you mean 'cost_last_hour'?", 10),
    ("time.hour > 5 AND foo", "unknown identifier 'foo'; write a variable", 28),
    ("request.model == gpt4", "or a quoted string such as 'gpt4'", 27),
    ("request.domain in alowed_domains", "did you mean 'allowed_domains'?", 28),
    ("context. == 'x'", "invalid context key in 'context.'", 10),
    ("context.a.b == 'x'", "invalid context key in 'context.a.b'", 10),
    ("cost_last_5minits > 1", "unknown unit 'minits'", 10),
    ("cost_last_hours_x > 1", "invalid window 'last_hours_x'", 10),
    ("cost_last_0min > 1", "a window of 0 covers nothing", 10),
    ("avg_cost_2d > 1", "longer than the 24 hours it averages over", 10),
    ("avg_cost_h > 1", "invalid bucket 'h' in 'avg_cost_h'", 10),
    ("cost > 1", "'cost' needs a window; write cost_last_hour", 10),
    ("1 < errors", "'errors' needs a window", 14),
    ("(time.hour > 5", "unbalanced parentheses: the '(' before 'time.hour > 5' is never closed", 10),
    ("time.hour > 5)", "unbalanced parentheses: ')' has no matching '('", 23),
    ("(time.hour > 5 true)", "unexpected 'true' after 'time.hour > 5'", 25),
    ("request.model == 'gpt", "unterminated string starting with '; add the closing '", 27),
    ("request.model == \"gpt", "unterminated string starting with \"", 27),
    (#"request.model == 'gpt\'"#, "unterminated string", 27),
    ("time.hour > 5 6", "unexpected '6' after 'time.hour > 5'", 24),
    ("time.hour > 5 'x'", "unexpected 'x' after 'time.hour > 5'", 24),
    ("time.hour >", "missing operand after '>' at the end of the condition", 20),
    ("time.hour > AND true", "missing operand after '>'; write a number", 20),
    ("AND time.hour > 5", "missing operand before 'AND'", 10),
    ("NOT", "missing operand after 'NOT' at the end", 10),
    ("()", "missing operand after '('", 10),
    ("request.model in ['a', 'b'", "the list that starts with '[' is never closed", 27),
    ("request.model in ['a' 'b']", "unexpected 'b' in a list", 32),
    ("context.region in last 5 minutes", "a window suffix applies only to a metric, but 'context.region' is a variable; remove 'in last 5 minutes'", 25),
    ("5 over 10 calls > 1", "a window suffix applies only to a metric, but '5' is not one", 12),
    ("allowed_domains over 3 calls", "'allowed_domains' is a named list", 26),
    ("cost over 0 calls > 1", "'over 0 calls' covers no calls", 20),
    ("cost over 1.5 calls > 1", "must be a whole number", 20),
    ("cost over 2x calls > 1", "must be a whole number", 20),
    ("cost over 10 > 1", "expected 'calls' after 'over 10'", 20),
    ("cost over calls > 1", "expected a number of calls after 'over'", 15),
    ("errors in last 0 minutes > 1", "a window of 0 covers nothing", 25),
    ("errors in last 5 > 1", "missing unit after 'last 5'", 25),
    ("errors in last 5 mintues > 1", "unknown unit 'mintues' in 'in last 5 mintues' (did you mean 'minutes'?)", 27),
    ("errors in last 2x minutes > 1", "invalid window '2x'", 25),
    ("cost_last_hour in last 5 minutes > 1", "'cost_last_hour' already has a window; remove 'in last 5 minutes'", 25),
    ("current_cost over 5 calls > 1", "'current_cost' takes no window suffix", 23),
    ("same_action_count over 5 calls > 1", "counts over a time window, not over calls", 28),
    ("tokens_per_call_trend in last 5 minutes > 1", "not a time window", 32),
    ("errors in last 5 minutes over 10 calls > 1", "'errors in last 5 minutes' already has a window; remove 'over 10 calls'", 35),
    ("time.hour = 5", "invalid character '='; write '==' to compare", 20),
    ("true & false", "invalid character '&'; write '&&' or AND", 15),
    ("true | false", "invalid character '|'; write '||' or OR", 15),
    ("time.hour @ 5", "invalid character '@'", 20),
    ("time.hour > 5abc", "invalid number '5abc'", 22),
    ("1 < 2 < 3", "comparisons cannot be chained", 16),
    ("cost_last_hour", "the condition computes a number, not true or false", 10),
    ("'yes'", "the condition computes a string", 10),
    ("agent.tags", "the condition computes a list", 10),
    ("cost_last_hour AND true", "'AND' needs true or false, but 'cost_last_hour' is a number", 10),
    ("true || request.model", "'||' needs true or false, but 'request.model' is a string", 18),
    ("NOT time.hour", "'NOT' needs true or false", 14),
    ("request.model + 1 > 2", "'+' needs numbers, but 'request.model' is a string", 10),
    ("-'a' == 1", "'-' needs numbers", 11),
    ("time.hour == '9'", "compares a number with a string, so it is never true", 10),
    ("time.hour != '9'", "so it is always true", 10),
    ("agent.trust_tier >= true", "'>=' orders numbers or strings, but 'true' is a boolean", 30),
    ("request.model in 5", "'in' needs a list or a string on its right", 27),
    ("5 in 'abc'", "finds a substring, but '5' is a number", 10),
    ("time.weekday == 'Monday'", "'Monday' is not a value of time.weekday, which is one of mon, tue", 26),
    ("time.weekday in ['sat', 'Sun']", "'Sun' is not a value of time.weekday", 26),
    ("agent.trust_tier >= 'verifed'", "'verifed' is not a trust tier; tiers are untrusted < basic < verified < privileged (did you mean 'verified'?)", 30),
    ("'trusted' < agent.trust_tier", "'trusted' is not a trust tier", 10),
    ("time.date < '2025-1-5'", "write YYYY-MM-DD", 22),
    ("request.model", "the condition computes a string, not true or false; compare it, as in \"request.model == 'value'\"", 10),
    ("agent.tags AND true", "test membership, as in \"'value' in agent.tags\"", 10),
    ("tokens_per_call > 1", "unknown identifier 'tokens_per_call' (did you mean 'tokens_per_call_trend'?)", 10),
    ("errors in last five minutes > 1", "expected a number after 'in last', got 'five'", 25),
]

@Suite struct ExpressionTests {
    @Test(arguments: evaluationCases)
    func conditionEvaluates(_ text: String, _ expected: Bool) throws {
        let condition = try parse(text)
        #expect(condition.evaluate(environment) == expected, "\(text)")
    }

    @Test func valueReturnsComputedResult() throws {
        #expect(try parse("time.hour > 3").value(environment) == .bool(true))
        #expect(try parse("context.flag").value(environment) == .string("true"))
        #expect(try parse("context.absent").value(environment) == .missing)
    }

    @Test func andOrShortCircuit() throws {
        let recorder = RecordingEnvironment()
        #expect(try parse("false AND cost_last_hour > 1").evaluate(recorder) == false)
        #expect(try parse("true OR cost_last_hour > 1").evaluate(recorder) == true)
        #expect(recorder.metricsRead.isEmpty)
        #expect(try parse("true AND cost_last_hour > 0").evaluate(recorder) == true)
        #expect(recorder.metricsRead == [.measure(.cost, .seconds(3600))])
    }

    @Test(arguments: metricCases)
    func metricParses(_ text: String, _ expected: Metric) throws {
        let condition = try parse("\(text) >= 0")
        #expect(condition.metrics == [expected], "\(text)")
    }

    @Test func metricsAndVariablesCollected() throws {
        let condition = try parse(
            "request.model == 'x' AND context.region == 'eu' OR 'a' in agent.tags AND errors in last 5 minutes > cost_today")
        #expect(condition.variables == ["request.model", "context.region", "agent.tags"])
        #expect(condition.metrics == [.measure(.errors, .seconds(300)), .costToday])
        #expect(condition.text.hasPrefix("request.model"))
        #expect(condition.position == position)
    }

    @Test func everyVariableParses() throws {
        for name in ExpressionNames.variables.keys.sorted() {
            let condition = try parse("\(name) == \(name)")
            #expect(condition.variables == [name], "\(name)")
        }
    }

    @Test func contextKeyWithHyphen() throws {
        let condition = try parse("context.cost-center == 'r-and-d'")
        #expect(condition.variables == ["context.cost-center"])
        #expect(condition.evaluate(environment))
    }

    @Test func namedListIsNotVariable() throws {
        let condition = try parse("request.domain in allowed_domains")
        #expect(condition.variables == ["request.domain"])
        #expect(condition.metrics.isEmpty)
    }

    @Test func metricDescriptions() {
        #expect(Metric.measure(.cost, .seconds(3600)).description == "cost_last_hour")
        #expect(Metric.measure(.errors, .seconds(300)).description == "errors_last_5min")
        #expect(Metric.measure(.calls, .seconds(90)).description == "calls_last_90s")
        #expect(Metric.measure(.cost, .calls(20)).description == "cost over 20 calls")
        #expect(Metric.average(.inputTokens, bucketSeconds: 3600).description == "avg_input_tokens_1h")
        #expect(Metric.sameActionCount(windowSeconds: 600).description == "same_action_count in last 10min")
        #expect(Metric.tokensPerCallTrend(calls: 10).description == "tokens_per_call_trend over 10 calls")
    }

    @Test(arguments: metricCases)
    func metricDescriptionParses(_ text: String, _ expected: Metric) throws {
        let condition = try parse("\(expected.description) >= 0")
        #expect(condition.metrics == [expected], "\(expected.description)")
    }

    @Test func yamlScalarConversion() {
        #expect(ExpressionValue(yamlScalar: "443", plain: true) == .number(443))
        #expect(ExpressionValue(yamlScalar: "-0.5", plain: true) == .number(-0.5))
        #expect(ExpressionValue(yamlScalar: "443", plain: false) == .string("443"))
        #expect(ExpressionValue(yamlScalar: "True", plain: true) == .bool(true))
        #expect(ExpressionValue(yamlScalar: "NO", plain: true) == .string("NO"))
        #expect(ExpressionValue(yamlScalar: "1e3", plain: true) == .string("1e3"))
        #expect(ExpressionValue(yamlScalar: "1.", plain: true) == .string("1."))
        #expect(ExpressionValue(yamlScalar: "example.com", plain: true) == .string("example.com"))
    }

    @Test func yamlListConversion() throws {
        let root = try YAMLLoader.load(text: "ports: [80, '443', https]\nnested: [[1]]\n", file: "p.yaml")
        guard case .mapping(let pairs) = root.value else {
            Issue.record("expected a mapping")
            return
        }
        #expect(ExpressionValue(yamlList: pairs[0].value) == .list([.number(80), .string("443"), .string("https")]))
        #expect(ExpressionValue(yamlList: pairs[1].value) == nil)
        #expect(ExpressionValue(yamlList: pairs[0].key) == nil)
    }

    @Test func valueDescriptions() {
        #expect(ExpressionValue.number(2).description == "2")
        #expect(ExpressionValue.number(0.25).description == "0.25")
        #expect(ExpressionValue.string("it's").description == #"'it\'s'"#)
        #expect(ExpressionValue.list([.bool(true), .missing]).description == "[true, missing]")
    }

    @Test(arguments: errorCases)
    func conditionRejected(_ text: String, _ fragment: String, _ column: Int) {
        let error = parseError(text)
        #expect(error?.message.contains(fragment) == true, "\(text) -> \(error?.message ?? "parsed")")
        #expect(error?.position.column == column, "\(text)")
    }

    @Test func errorPositionAndDescription() throws {
        let error = try #require(parseError("time.hour > 5 6"))
        #expect(error.position.file == "p.yaml")
        #expect(error.position.line == 3)
        #expect(error.description == "p.yaml:3:24: unexpected '6' after 'time.hour > 5'; join the two with AND or OR, or remove '6'")
    }

    @Test func quotedScalarShiftsColumn() {
        #expect(parseError("time.hour > 5 6", quoted: true)?.position.column == 25)
    }

    @Test func multilineKeepsScalarPosition() {
        let error = parseError("time.hour > 5\nAND foo")
        #expect(error?.position == position)
        #expect(error?.message.contains("unknown identifier 'foo'") == true)
        #expect(error?.message.hasSuffix("(at line 2, column 5 of the condition)") == true)
    }

    @Test func deepNestingRejected() {
        let depth = ExpressionParser.maximumDepth + 10
        let text = String(repeating: "(", count: depth) + "true" + String(repeating: ")", count: depth)
        #expect(parseError(text)?.message.contains("nested more than") == true)

        let longChain = Array(repeating: "1", count: depth).joined(separator: " + ") + " > 0"
        #expect(parseError(longChain)?.message.contains("nested more than") == true)
    }

    @Test func moderateNestingAccepted() throws {
        let text = String(repeating: "(", count: 50) + "true" + String(repeating: ")", count: 50)
        #expect(try parse(text).evaluate(environment))

        let manyTerms = Array(repeating: "true", count: 500).joined(separator: " AND ")
        #expect(try parse(manyTerms).evaluate(environment))
    }

    @Test func namedListShadowedByBuiltIn() throws {
        let lists: [String: ExpressionValue] = ["cost_today": .list([.string("x")])]
        let condition = try ConditionParser.parse("cost_today > 1", position: position, namedLists: lists)
        #expect(condition.metrics == [.costToday])
    }
}

@Suite struct FailClosedTests {
    private struct Empty: ExpressionEnvironment {
        func variable(_ name: String) -> ExpressionValue { .missing }
        func metric(_ metric: Metric) -> Double { .nan }
    }

    private func condition(_ text: String) throws -> Condition {
        try ConditionParser.parse(text, position: SourcePosition(file: "f.yaml", line: 1, column: 1), namedLists: [:])
    }

    @Test(arguments: ["context.budget_left < 1", "context.region != 'eu'", "NOT context.flag", "request.max_tokens / 0 >= 0"])
    func missingHoldsForDenyRules(text: String) throws {
        #expect(try condition(text).value(Empty()) == .missing)
        #expect(try condition(text).holds(Empty(), failClosedTrue: true))
        #expect(try !condition(text).holds(Empty(), failClosedTrue: false))
    }

    @Test func falseNeverHolds() throws {
        #expect(try !condition("1 == 2").holds(Empty(), failClosedTrue: true))
    }
}

using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench/Handoff.MicroBenchmarks -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(Handoff.MicroBenchmarks.DrainMiddlewareBenchmarks).Assembly).Run(args);
